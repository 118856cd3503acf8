"""Compiled solvers survive the process: JAX's persistent compilation cache, on by default.

A fit's first call spends ~1.5 s and ~200 MB of peak memory in XLA compiling the solver
loop. Prefect process workers, CLI runs and batch jobs start a new Python process per run,
so without a persistent cache every run pays that again. With it, a later process loads
the executable instead (measured here: first fit 1.8 s -> 0.45 s, peak RSS 401 -> 227 MB
at 1e4 points).

Location: ``$NLSQ_JAX_CACHE_DIR`` if set (``off`` or an empty value disables it), else
``$XDG_CACHE_HOME/nlsq-flows/jax`` (``~/.cache/nlsq-flows/jax``). JAX creates, writes and
evicts the files itself; this module only sets two configuration values, and never
overrides a cache directory the user already configured for JAX.
"""

from __future__ import annotations

import os

import jax

_MIN_COMPILE_SECONDS = 0.2  # cache the solver loops, not every trivial helper


def cache_dir_from_env(environ=os.environ) -> str | None:
    """The cache directory the environment asks for (None: disabled)."""
    explicit = environ.get("NLSQ_JAX_CACHE_DIR")
    if explicit is not None:
        return None if explicit.strip().lower() in ("", "off", "0", "false", "none") else explicit
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nlsq-flows", "jax")


def enable_persistent_cache() -> str | None:
    """Point JAX at the cache directory unless the user configured one; returns the one in use."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = cache_dir_from_env()
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS)
    return path


enable_persistent_cache()
