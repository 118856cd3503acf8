"""ARCHITECTURE.md's "how to add" recipes, checked against the code.

Each recipe is written down here as the files it adds and the edits it makes to existing
files, exactly as ARCHITECTURE.md tells a newcomer. A fresh interpreter then imports the
project with those edits applied in memory (an import hook serves the edited and new
modules; nothing on disk changes) and checks that every consumer picked the addition up:
the enums, presets, the request form, the CLI and the front door's checks derive from the
registries, so no other file needs a line. The file counts in ARCHITECTURE.md's headings
must be the counts these recipes have.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# -- the recipes: new modules (path -> source) and edits of existing files (path -> function) --
NEW_STRATEGY = '''
"""mirror: the standard strategy registered under another name (an architecture check)."""
from . import StrategySpec
from .standard import STRATEGY as _STANDARD

STRATEGY = StrategySpec(name="mirror", summary="the standard strategy, registered again", in_memory=True,
                        takes_covariance=False, reports_progress=False, solve=_STANDARD.solve)
'''

NEW_LOSS = '''

@_loss("soft_l1_again", "soft_l1 under another name (an architecture check)")
def _soft_l1_again(z):
    return _soft_l1(z)
'''

NEW_FORMAT = '''
"""npyc: .npy data under another extension (an architecture check)."""
from .formats import DataFormat, register_format
from .inspect import _npy_layout
from .sources import RecordChunkSource


def layout(fs, path, x_key, y_key, sigma_key, *, where, size, chunk_size):
    return _npy_layout(fs, path, x_key, y_key, sigma_key, where, size)


register_format(DataFormat("npyc", (".npyc",), layout, RecordChunkSource))
'''

NEW_EXECUTOR = '''
"""A host executor that evaluates a pass's chunks last first and yields them in chunk order."""
import numpy as np

from .host import ChunkPartial, SourceExecutor


class ReversedOrderExecutor(SourceExecutor):
    def partials(self, params_stack, start=0, y_moments=False):
        params_stack = np.atleast_2d(np.asarray(params_stack, np.float64))
        chunks = list(enumerate(self.source.chunks(start), start=start))
        done = {j: self.chunk_partial(params_stack, chunk, y_moments) for j, chunk in reversed(chunks)}
        for j, _ in chunks:
            yield ChunkPartial(j, *done[j])
'''


def _append_to_builtin(source: str) -> str:
    new, n = re.subn(r'^(BUILTIN = \([^)]*?)(,?)\)', r'\1, "mirror")', source, count=1, flags=re.M)
    assert n == 1, "strategies/__init__.py has no BUILTIN = (...) line"
    return new


def _import_after_builtin_formats(source: str) -> str:
    assert "register_builtin_formats()\n" in source
    return source.replace("register_builtin_formats()\n", "register_builtin_formats()\nfrom . import npyc  # noqa: E402,F401\n", 1)


RECIPES = {
    "strategy": {"new": {"nlsq_tasks/strategies/mirror.py": NEW_STRATEGY},
                 "edit": {"nlsq_tasks/strategies/__init__.py": _append_to_builtin}},
    "loss": {"new": {}, "edit": {"nlsq_tasks/engine/loss.py": lambda s: s + NEW_LOSS}},
    "data format": {"new": {"nlsq_tasks/io/npyc.py": NEW_FORMAT},
                    "edit": {"nlsq_tasks/io/__init__.py": _import_after_builtin_formats}},
    "pass executor": {"new": {"nlsq_tasks/engine/passes/reversed_order.py": NEW_EXECUTOR}, "edit": {}},
}

# -- what a fresh interpreter with every recipe applied must see --------------------------------
CHECKS = r'''
import importlib.abc, importlib.machinery, importlib.util, json, sys, tempfile
from pathlib import Path

SOURCES = json.loads(Path(sys.argv[1]).read_text())  # module name -> full source after the recipes


class Edited(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name not in SOURCES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:  # a new module
            return importlib.util.spec_from_loader(name, self, origin=f"<recipe {name}>")
        spec.loader = self  # an edited one: same place, package path and all
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(compile(SOURCES[module.__name__], module.__spec__.origin, "exec"), module.__dict__)


sys.meta_path.insert(0, Edited())
# The request form and the CLI without the flows package's __init__, which imports every flow
# (Prefect's flow machinery: seconds, and nothing these checks need).
import types
flows = types.ModuleType("flows")
flows.__path__ = [str(Path.cwd() / "flows")]
sys.modules["flows"] = flows

import numpy as np
import jax.numpy as jnp
import nlsq_tasks
from nlsq_tasks import fit, plan_fit
from nlsq_tasks.api import FitInputError
from nlsq_tasks.workflow import Preset, Strategy
from flows.cli import _parser
from flows.request import DataFormat, Loss, StrategyChoice


def refused(call):
    try:
        call()
    except (FitInputError, ValueError) as exc:
        return str(exc)
    raise AssertionError("accepted")


def cli_choices(option, command="run"):
    parser = _parser()._subparsers._group_actions[0].choices[command]
    return next(a.choices for a in parser._actions if option in a.option_strings)


# strategy: the enum, presets, the request form, the CLI, the planner and the front door
assert Strategy("mirror").value == "mirror" and StrategyChoice("mirror")
assert Preset(name="p", strategy="mirror").strategy == "mirror"
assert "mirror" in cli_choices("--strategy")
assert plan_fit(n_points=500, n_params=3, strategy="mirror").strategy == "mirror"
assert "'mirror'" in refused(lambda: plan_fit(n_points=500, n_params=3, strategy="nope"))
x = np.linspace(0.0, 4.0, 200)
y = 2.0 * np.exp(-1.3 * x) + 0.5 + 0.01 * np.cos(7 * x)
decay = lambda x, a, b, c: a * jnp.exp(-b * x) + c
mirrored, standard = (fit(decay, x, y, p0=[1.0, 1.0, 0.0], strategy=s) for s in ("mirror", "standard"))
assert mirrored.strategy == "mirror" and np.array_equal(mirrored.popt, standard.popt)

# loss: the front door's and the plan's checks, presets, the request form, the engine
from nlsq_tasks.engine.loss import loss_names, loss_terms
assert "soft_l1_again" in loss_names() and Loss("soft_l1_again")
assert Preset(name="p", loss="soft_l1_again").loss == "soft_l1_again"
assert plan_fit(n_points=500, n_params=3, loss="soft_l1_again").loss == "soft_l1_again"
assert "'soft_l1_again'" in refused(lambda: plan_fit(n_points=500, n_params=3, loss="nope"))
r = np.linspace(-3.0, 3.0, 61)
assert all(np.array_equal(a, b) for a, b in zip(loss_terms("soft_l1_again", 0.5, r), loss_terms("soft_l1", 0.5, r)))

# data format: the registry, the request form, the CLI, inspection and loading
from nlsq_tasks.io import format_names, inspect_data, load_arrays
assert "npyc" in format_names() and DataFormat("npyc") and all("npyc" in cli_choices("--format", c) for c in ("run", "plan", "batch"))
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "data.npyc"
    with open(path, "wb") as fh:
        np.save(fh, np.column_stack([x, y]))
    assert inspect_data(str(path)).n_points == 200
    assert np.array_equal(load_arrays(str(path))[1], y)

# pass executor: plugged into the pass interface, same sums to the bit
from nlsq_tasks.engine.passes import NormalEquationsPass, SourceExecutor, evaluate
from nlsq_tasks.engine.passes.reversed_order import ReversedOrderExecutor
from nlsq_tasks.engine.sources import ArrayChunkSource
reduction, source = NormalEquationsPass(decay, "linear"), ArrayChunkSource(x, y, None, chunk_size=64)
p = np.array([[1.0, 1.0, 0.0], [2.0, 1.3, 0.5]])
got, want = evaluate(ReversedOrderExecutor(reduction, source), p), evaluate(SourceExecutor(reduction, source), p)
assert all(np.array_equal(a, b) for a, b in zip(got, want))
assert not [m for m in SOURCES if m not in sys.modules], "a recipe module was not imported"
print("ok")
'''


def _module(path: str) -> str:
    name = path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def _changed_lines(before: str, after: str) -> int:
    ops = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines()).get_opcodes()
    return sum(j2 - j1 for tag, _, _, j1, j2 in ops if tag in ("replace", "insert"))


def _counts(recipe) -> tuple[int, int, int]:
    """(new files, edited files, lines changed in the edited ones)."""
    lines = sum(_changed_lines(s := (REPO / p).read_text(), edit(s)) for p, edit in recipe["edit"].items())
    return len(recipe["new"]), len(recipe["edit"]), lines


def test_architecture_states_each_recipes_file_counts():
    text = (REPO / "ARCHITECTURE.md").read_text()
    for what, recipe in RECIPES.items():
        heading = re.search(rf"^## How to add a {what} \(files: (\d+) new \+ (\d+) edited(?: \((\d+) lines?\))?\)",
                            text, re.M)
        assert heading, f"ARCHITECTURE.md has no '## How to add a {what} (files: N new + M edited ...)' heading"
        new, edited, lines = _counts(recipe)
        assert (int(heading[1]), int(heading[2])) == (new, edited), (what, heading[0])
        if heading[3] is not None:
            assert int(heading[3]) == lines, (what, heading[0], lines)


def test_every_recipe_reaches_every_consumer(tmp_path):
    sources = {}
    for recipe in RECIPES.values():
        for path, text in recipe["new"].items():
            sources[_module(path)] = textwrap.dedent(text).lstrip()
        for path, edit in recipe["edit"].items():
            sources[_module(path)] = edit((REPO / path).read_text())
    spec = tmp_path / "sources.json"
    spec.write_text(json.dumps(sources))
    run = subprocess.run([sys.executable, "-c", CHECKS, str(spec)], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-4000:]
