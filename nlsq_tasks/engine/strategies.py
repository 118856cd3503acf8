"""In-memory strategies: ``run_standard`` and ``run_chunked``.

Both run the same compiled trust-region loop (:mod:`.loop`) over the same in-memory pass
executor (:func:`~.passes.tiled_pass`); they differ only in how the data is laid out
(:mod:`.passes.in_memory`), so they cannot drift apart:

- **standard**: ``n`` is padded (edge values, masked out) up to a 1/8-octave size bucket so
  that nearby sizes reuse one compiled solver; the pass walks the data in cache-sized tiles
  of ``STANDARD_TILE`` points (one block up to ``4 * STANDARD_TILE``; see
  :func:`standard_layout`). A 2-D ``sigma`` (covariance) is whitened with its Cholesky
  factor and the data is then one tile. :func:`solve_batch` (multi-start) lays data out
  the same way and runs :func:`~.loop.solve` ``vmap``-ed over many start points.
- **chunked**: no padding: the pass walks the caller's arrays in ``chunk_size`` tiles,
  the last one taken flush with the end and its overlap masked. Peak memory is the data
  plus ``O(chunk_size * n_params)`` (plus one aligned copy when the caller's arrays are
  not float64 or not 64-byte aligned, which XLA needs to use them in place).

Inputs are trusted (the front door validates): ``p0`` strictly inside ``[lower, upper]``,
``sigma`` None, ``(n,)`` or (standard only) ``(n, n)`` positive definite.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._compiler import COMPILER_OPTIONS
from .finalize import build_result
from .loop import LoopOutput, run_loop, solve
from .options import SolverOptions
from .passes import STANDARD_TILE, Layout, lay_out_chunked, lay_out_standard, standard_layout  # noqa: F401
from .passes.in_memory import HOST_MAX_ELEMENTS
from .result import FitResult
from .trust_region import as_settings

def _lay_out_standard(x, y, sigma):
    """:func:`~.passes.lay_out_standard`; small data (the common repeated small fit) is
    padded here in three NumPy steps, without the 64-byte alignment that lets XLA adopt
    a large buffer in place (the same values: only where they sit in memory differs)."""
    if not (type(x) is np.ndarray and type(y) is np.ndarray and (sigma is None or type(sigma) is np.ndarray)):
        return lay_out_standard(x, y, sigma)
    n = int(y.shape[0])
    size, tile = standard_layout(n)
    if (sigma is None or sigma.ndim == 1) and x.size // n * size <= HOST_MAX_ELEMENTS:
        return Layout(_padded(x, n, size), _padded(y, n, size), None if sigma is None else _padded(sigma, n, size),
                      n, int(tile))
    return lay_out_standard(x, y, sigma)


def _padded(a: np.ndarray, n: int, size: int) -> np.ndarray:
    """``a`` (float64, ``n`` points on its last axis) with edge values up to ``size``."""
    if size == n and a.dtype == np.float64 and a.flags.c_contiguous:
        return a
    out = np.empty(a.shape[:-1] + (size,))
    out[..., :n] = a
    out[..., n:] = a[..., -1:]
    return out


def _run(fn, p0, lower, upper, options, param_names, layout, *, strategy, progress=None) -> FitResult:
    p0 = np.asarray(p0, np.float64)
    lower = np.asarray(lower, np.float64)
    upper = np.asarray(upper, np.float64)
    x, y, sigma, n, tile = layout
    settings = as_settings(options, p0.shape[0])
    out, timings = run_loop(
        fn, options.loss, tile, p0, lower, upper, x, y, sigma, n, options.f_scale, settings, progress=progress
    )
    return build_result(
        out.state,
        float(out.sst),
        options=options,
        param_names=param_names,
        lower=lower,
        upper=upper,
        strategy=strategy,
        timings=timings,
    )


def run_standard(
    fn, x, y, sigma, p0, lower, upper, options: SolverOptions, param_names: Sequence[str], progress=None
) -> FitResult:
    """Fit with all data in memory (padded to a size bucket, walked in cache-sized tiles).
    ``progress(event)``, if given, is called once per iteration."""
    return _run(fn, p0, lower, upper, options, param_names, _lay_out_standard(x, y, sigma), strategy="standard",
                progress=progress)


def run_chunked(
    fn, x, y, sigma, p0, lower, upper, options: SolverOptions, param_names: Sequence[str], chunk_size: int,
    progress=None,
) -> FitResult:
    """Fit in-memory data in ``chunk_size`` blocks, without copying it (sigma None or 1-D).
    ``progress(event)``, if given, is called once per iteration (one pass over all chunks)."""
    if sigma is not None and np.ndim(sigma) != 1:
        raise ValueError(
            f"sigma: run_chunked takes None or per-point (1-D) sigma, got an array of shape {np.shape(sigma)}; "
            "use the standard strategy for a covariance matrix"
        )
    layout = lay_out_chunked(x, y, sigma, chunk_size)
    return _run(fn, p0, lower, upper, options, param_names, layout, strategy="chunked", progress=progress)


@functools.lru_cache(maxsize=16)
def _batched_solver(fn, loss: str, tile: int):
    """:func:`~.loop.solve` ``vmap``-ed over the start point, jitted: all starts are one XLA
    computation (the batched ``while_loop`` runs until the slowest start stops; finished
    starts are frozen meanwhile)."""

    def one(p0, lower, upper, x, y, sigma, n_valid, f_scale, settings):
        return solve(fn, loss, tile, p0, lower, upper, x, y, sigma, n_valid, f_scale, settings)

    return jax.jit(jax.vmap(one, in_axes=(0,) + (None,) * 8), compiler_options=COMPILER_OPTIONS)


def solve_batch(fn, x, y, sigma, starts, lower, upper, options: SolverOptions) -> LoopOutput:
    """Solve from every row of ``starts`` (``(S, P)``) in one compiled computation, with
    the data laid out exactly as :func:`run_standard` lays it out.

    Returns the stacked :class:`~.loop.LoopOutput` (leading axis ``S``, computation
    finished); row ``i`` is what a solve from ``starts[i]`` alone gives, up to roundoff.
    """
    x, y, sigma, n, tile = _lay_out_standard(x, y, sigma)
    settings = as_settings(options, np.shape(starts)[1])
    out = _batched_solver(fn, options.loss, int(tile))(
        jnp.asarray(starts, jnp.float64), jnp.asarray(lower, jnp.float64), jnp.asarray(upper, jnp.float64),
        x, y, sigma, jnp.asarray(n, jnp.int64), jnp.asarray(options.f_scale, jnp.float64), settings)
    return jax.block_until_ready(out)
