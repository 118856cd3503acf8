"""The persistent compilation cache: where it goes, how to turn it off, and that it is used."""

import os
import subprocess
import sys
import textwrap

from nlsq_tasks._compile_cache import cache_dir_from_env

_PROBE = textwrap.dedent(
    """
    import jax
    preset = {preset!r}
    if preset:
        jax.config.update("jax_compilation_cache_dir", preset)
    import nlsq_tasks
    print(jax.config.jax_compilation_cache_dir)
    """
)


def _probe(env_updates, preset=None):
    env = {k: v for k, v in os.environ.items() if k not in ("NLSQ_JAX_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(env_updates)
    out = subprocess.run([sys.executable, "-c", _PROBE.format(preset=preset)], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    return out.stdout.strip().splitlines()[-1]


def test_default_location_follows_xdg(tmp_path):
    assert cache_dir_from_env({"XDG_CACHE_HOME": str(tmp_path)}) == str(tmp_path / "nlsq-flows" / "jax")
    assert cache_dir_from_env({"NLSQ_JAX_CACHE_DIR": "/x/y"}) == "/x/y"
    for off in ("off", "", "0", "false"):
        assert cache_dir_from_env({"NLSQ_JAX_CACHE_DIR": off}) is None


def test_import_configures_jax_and_respects_the_user(tmp_path):
    assert _probe({"NLSQ_JAX_CACHE_DIR": str(tmp_path / "c")}) == str(tmp_path / "c")
    assert _probe({"NLSQ_JAX_CACHE_DIR": "off"}) == "None"
    assert _probe({"NLSQ_JAX_CACHE_DIR": str(tmp_path / "c")}, preset=str(tmp_path / "mine")) == str(tmp_path / "mine")


def test_the_compiled_solver_is_written_to_the_cache(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np, jax.numpy as jnp
        from nlsq_tasks.engine.options import SolverOptions
        from nlsq_tasks.engine.strategies import run_standard
        x = np.linspace(0, 4, 200); y = 1.5 * np.exp(-0.8 * x)
        f = lambda x, a, b: a * jnp.exp(-b * x)
        r = run_standard(f, x, y, None, np.array([1.0, 1.0]), np.full(2, -np.inf), np.full(2, np.inf),
                         SolverOptions(), ["a", "b"])
        print(r.popt[0])
        """
    )
    env = dict(os.environ, NLSQ_JAX_CACHE_DIR=str(tmp_path / "cache"))
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=300)
    entries = os.listdir(tmp_path / "cache")
    assert any(name.startswith("jit__solve") or name.startswith("jit_solve") for name in entries), entries
