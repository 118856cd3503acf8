"""In-memory strategies: ``run_standard`` and ``run_chunked``.

Both run the same compiled trust-region loop (:mod:`.loop`) over the same tiled pass
(:func:`~.normal_eqs.data_pass`); they differ only in how the data is laid out, so they
cannot drift apart:

- **standard**: ``n`` is padded (edge values, masked out) up to a 1/8-octave size bucket so
  that nearby sizes reuse one compiled solver; the pass walks the data in cache-sized tiles
  of ``STANDARD_TILE`` points (one block up to ``4 * STANDARD_TILE``; see
  :func:`standard_layout`, which other in-memory paths should use to lay data out alike). A 2-D ``sigma`` (covariance) is whitened with its Cholesky
  factor and the data is then one tile.
- **chunked**: no padding: the pass walks the caller's arrays in ``chunk_size`` tiles,
  the last one taken flush with the end and its overlap masked. Peak memory is the data
  plus ``O(chunk_size * n_params)`` (plus one aligned copy when the caller's arrays are
  not float64 or not 64-byte aligned, which XLA needs to use them in place).

Inputs are trusted (the front door validates): ``p0`` strictly inside ``[lower, upper]``,
``sigma`` None, ``(n,)`` or (standard only) ``(n, n)`` positive definite.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from .finalize import build_result
from .loop import bucket_size, run_loop
from .options import SolverOptions
from .result import FitResult
from .trust_region import as_settings

STANDARD_TILE = 8192


_ALIGN = 64  # bytes; XLA:CPU adopts a numpy buffer without copying only when so aligned


def _aligned_empty(shape, dtype=np.float64) -> np.ndarray:
    n = int(np.prod(shape))
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + _ALIGN // itemsize, dtype)
    off = (-raw.ctypes.data % _ALIGN) // itemsize
    return raw[off : off + n].reshape(shape)


def _pad_last(a: np.ndarray, n_to: int) -> np.ndarray:
    """``a`` with its last axis padded to ``n_to`` by repeating the edge value (a host
    copy; kept for nlsq_tasks.engine.multistart, which lays data out as standard does)."""
    extra = n_to - a.shape[-1]
    if extra == 0:
        return a
    return np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)], mode="edge")


def _device_array(a: np.ndarray, n_to: int):
    """``a`` (float64, last axis padded with edge values up to ``n_to``) as a device array.

    The host copy is made 64-byte aligned so that ``device_put`` adopts it instead of
    copying again: peak memory is the caller's data plus one padded copy at most (none
    when the caller's array is already float64, aligned and needs no padding).
    """
    a = np.asarray(a)
    n = a.shape[-1]
    fits = a.dtype == np.float64 and a.flags.c_contiguous and a.ctypes.data % _ALIGN == 0
    if n_to == n and fits:
        return jax.device_put(a)
    out = _aligned_empty(a.shape[:-1] + (n_to,))
    out[..., :n] = a
    if n_to > n:
        out[..., n:] = a[..., -1:]
    return jax.device_put(out)


def _run(fn, x, y, sigma, p0, lower, upper, options, param_names, *, tile, pad_to, strategy) -> FitResult:
    p0 = np.asarray(p0, np.float64)
    lower = np.asarray(lower, np.float64)
    upper = np.asarray(upper, np.float64)
    n = int(np.shape(y)[0])
    if sigma is not None:
        sigma = np.asarray(sigma, np.float64)
        if sigma.ndim == 2:
            sigma = np.linalg.cholesky(sigma)  # lower factor L: r = L^-1 (f - y)
            pad_to, tile = n, n
    x, y = _device_array(x, pad_to), _device_array(y, pad_to)
    if sigma is not None and sigma.ndim == 1:
        sigma = _device_array(sigma, pad_to)
    settings = as_settings(options, p0.shape[0])
    out, timings = run_loop(
        fn, options.loss, tile, p0, lower, upper, x, y, sigma, n, options.f_scale, settings
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


def standard_layout(n: int) -> tuple[int, int]:
    """``(padded size, tile)`` the standard strategy uses for ``n`` points.

    Up to a few tiles' worth, the data is one block (no scan, no partial last tile); above,
    bucket sizes ``m * 2**e`` (``e >= 13``) are multiples of STANDARD_TILE: tiles fit exactly.
    """
    size = bucket_size(n)
    return size, (size if size <= 4 * STANDARD_TILE else STANDARD_TILE)


def run_standard(
    fn, x, y, sigma, p0, lower, upper, options: SolverOptions, param_names: Sequence[str]
) -> FitResult:
    """Fit with all data in memory (padded to a size bucket, walked in cache-sized tiles)."""
    size, tile = standard_layout(int(np.shape(y)[0]))
    return _run(
        fn, x, y, sigma, p0, lower, upper, options, param_names, tile=tile, pad_to=size, strategy="standard"
    )


def run_chunked(
    fn, x, y, sigma, p0, lower, upper, options: SolverOptions, param_names: Sequence[str], chunk_size: int
) -> FitResult:
    """Fit in-memory data in ``chunk_size`` blocks, without copying it (sigma None or 1-D)."""
    if sigma is not None and np.ndim(sigma) != 1:
        raise ValueError(
            f"sigma: run_chunked takes None or per-point (1-D) sigma, got an array of shape {np.shape(sigma)}; "
            "use the standard strategy for a covariance matrix"
        )
    n = int(np.shape(y)[0])
    return _run(
        fn, x, y, sigma, p0, lower, upper, options, param_names,
        tile=max(1, int(chunk_size)), pad_to=n, strategy="chunked",
    )  # fmt: skip
