"""Layering: the library (everything in nlsq_tasks except nlsq_tasks.io) never imports
Prefect, fsspec or s3fs.

Two checks: a dynamic one (import every such module in a fresh interpreter and look at
``sys.modules``), which also catches indirect imports through third-party packages; and
a static one (parse every file and look at its import statements), which also catches
imports hidden inside functions that the dynamic check never executes.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "nlsq_tasks"
FORBIDDEN = ("prefect", "fsspec", "s3fs")

PROBE = r"""
import importlib, json, pkgutil, sys, traceback
import nlsq_tasks, nlsq_tasks.workflow, nlsq_tasks.engine
imported, failed = [], {}
for info in pkgutil.walk_packages(nlsq_tasks.__path__, "nlsq_tasks.",
                                  onerror=lambda name: failed.setdefault(name, "walk failed")):
    if info.name == "nlsq_tasks.io" or info.name.startswith("nlsq_tasks.io."):
        continue
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except Exception:
        failed[info.name] = traceback.format_exc(limit=3)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
culprits = {}
for name in loaded:  # who pulled it in: modules whose globals reference it
    culprits[name] = sorted(
        m for m, mod in list(sys.modules.items())
        if m.startswith("nlsq_tasks") and any(getattr(v, "__name__", "").split(".")[0] == name
                                              for v in vars(mod).values() if hasattr(v, "__name__"))
    )
print(json.dumps({"imported": imported, "failed": failed, "loaded": loaded, "culprits": culprits}))
""" % (FORBIDDEN,)


def test_library_modules_do_not_load_prefect_fsspec_s3fs():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "nlsq_tasks.workflow.presets" in report["imported"]  # the walk really happened
    assert not report["failed"], "modules that fail to import:\n" + "\n".join(
        f"{k}:\n{v}" for k, v in report["failed"].items()
    )
    assert report["loaded"] == [], f"forbidden modules loaded: {report['loaded']} (by {report['culprits']})"


def _forbidden_imports(source: str, label: str) -> list[str]:
    tree = ast.parse(source, filename=label)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names = [node.args[0].value]
        else:
            continue
        found += [f"{label}:{node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    return found


def test_no_file_outside_io_imports_them():
    files = [p for p in PACKAGE.rglob("*.py") if (PACKAGE / "io") not in p.parents]
    assert PACKAGE / "workflow" / "presets.py" in files and not any("/io/" in str(p) for p in files)
    offenders = [hit for p in files for hit in _forbidden_imports(p.read_text(), str(p.relative_to(REPO)))]
    assert offenders == [], "imports of prefect/fsspec/s3fs outside nlsq_tasks/io:\n" + "\n".join(offenders)


def test_static_check_catches_a_violation():
    # The checker itself must be able to fail: nested, aliased and dynamic imports are seen.
    src = "import os\ndef f():\n    import fsspec.core as c\nfrom prefect import flow\nimportlib.import_module('s3fs')\n"
    hits = _forbidden_imports(src, "probe.py")
    assert sorted(h.rsplit(": ", 1)[1] for h in hits) == ["fsspec.core", "prefect", "s3fs"]
    assert _forbidden_imports("import os\nfrom .io import x\nimport prefectish\n", "ok.py") == []


def _private_library_imports(source: str, label: str) -> list[str]:
    """Imports of nlsq_tasks that reach past its public surface: a module or a name
    starting with an underscore (``nlsq_tasks.io._fs``, ``from ... import _json_safe``)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=label)):
        if isinstance(node, ast.Import):
            pairs = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            pairs = [(node.module, a.name) for a in node.names]
        else:
            continue
        for module, name in pairs:
            if module.split(".")[0] != "nlsq_tasks":
                continue
            private = [part for part in module.split(".") if part.startswith("_")]
            if name is not None and name.startswith("_"):
                private.append(name)
            if private:
                found.append(f"{label}:{node.lineno}: {module}{'' if name is None else ' import ' + name}")
    return found


def test_flows_use_only_public_names_of_the_library():
    files = sorted((REPO / "flows").rglob("*.py"))
    assert REPO / "flows" / "tasks.py" in files
    offenders = [hit for p in files for hit in _private_library_imports(p.read_text(), str(p.relative_to(REPO)))]
    assert offenders == [], "flows/ imports private parts of nlsq_tasks:\n" + "\n".join(offenders)
    # the check itself sees what it must refuse
    assert _private_library_imports("from nlsq_tasks.io._fs import resolve\nimport nlsq_tasks._plan\n"
                                    "from nlsq_tasks.engine.result import _json_safe\n", "x.py") == [
        "x.py:1: nlsq_tasks.io._fs import resolve", "x.py:2: nlsq_tasks._plan",
        "x.py:3: nlsq_tasks.engine.result import _json_safe"]
