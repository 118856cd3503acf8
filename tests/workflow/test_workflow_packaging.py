"""The built-in presets ship as package data: a real non-editable install finds them.

Builds a wheel from a copy of the sources (so the shared checkout gets no build/ or
egg-info), installs it with ``pip install --no-deps --target``, and loads presets from
that target in a fresh interpreter. Offline: no build isolation, so setuptools and wheel
come from the test environment (``wheel`` is in the ``test`` extra).
"""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_every_package_on_disk_is_listed_in_pyproject():
    setuptools = pytest.importorskip("setuptools")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = set(setuptools.find_packages(str(REPO), include=["nlsq_tasks*", "flows*"]))
    missing = on_disk - listed
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    assert "nlsq_tasks._presets" in listed


@pytest.mark.slow
def test_non_editable_install_ships_presets(tmp_path):
    pytest.importorskip("wheel")
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("nlsq_tasks", "flows", "presets"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    target = tmp_path / "target"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert sorted(p.name for p in (target / "nlsq_tasks" / "_presets").glob("*.yaml")) == sorted(
        p.name for p in (REPO / "presets").glob("*.yaml")
    )
    probe = (
        "import json, nlsq_tasks, nlsq_tasks.workflow as w\n"
        "p = w.load_preset('quality')\n"
        "print(json.dumps({'file': nlsq_tasks.__file__, 'names': w.list_presets(),"
        " 'n_starts': p.n_starts, 'tol': p.tolerance}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(target)  # imported from the install, not the checkout
    assert got["names"] == sorted(p.stem for p in (REPO / "presets").glob("*.yaml"))
    assert (got["n_starts"], got["tol"]) == (20, 1e-10)
