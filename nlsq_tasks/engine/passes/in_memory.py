"""In-graph passes over data held on the device: the tiled pass and the in-memory layouts.

:func:`tiled_pass` is the in-memory executor. It walks ``N`` points in tiles of ``tile``
points inside a ``lax.scan`` (the ``(p, tile)`` Jacobian stays in cache whatever ``N``)
and folds the tiles' partials with the reduction's ``combine`` in tile order. It is
traceable, so the trust-region loop calls it inside its single compiled ``while_loop``
(no host round-trip per iteration); :func:`in_graph_executor` packages it as the
``params -> reduction`` function that :func:`~..loop.drive` takes. A sharded executor is
another such function (e.g. ``shard_map`` of :func:`tiled_pass` over devices, then the
per-device partials folded with ``combine`` in device order).

Layouts (how a strategy hands data to the pass; the tile fixes the summation order):

- **standard** (:func:`lay_out_standard`): ``n`` padded with edge values (masked out) up
  to a 1/8-octave size bucket so nearby sizes share one compiled solver; one block up to
  ``4 * STANDARD_TILE`` points, tiles of ``STANDARD_TILE`` above. A 2-D ``sigma``
  (covariance) becomes its Cholesky factor and the data one unpadded tile.
- **chunked** (:func:`lay_out_chunked`): no padding; tiles of ``chunk_size`` points, the
  last one taken flush with the end of the data and its overlap masked, so the caller's
  arrays are used in place (one aligned float64 copy when they are not float64 or not
  64-byte aligned, which XLA needs to adopt a buffer).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .reductions import Reduction

STANDARD_TILE = 8192
# Small data stays a NumPy array: the compiled call takes it as it is, while device_put
# costs ~70 us a call in Python (measured), a quarter of a whole 100-point fit's loop.
HOST_MAX_ELEMENTS = 1 << 16
_ALIGN = 64  # bytes; XLA:CPU adopts a numpy buffer without copying only when so aligned


def _take(a, start, size):
    """``a[..., start:start+size]`` with a dynamic start (last axis)."""
    return lax.dynamic_slice_in_dim(a, start, size, axis=a.ndim - 1)


def tile_partial(reduction: Reduction, params, x, y, sigma, n_valid, size: int, j, f_scale):
    """The partial of tile ``j`` of ``size`` (static) points of ``len(y)`` points.

    Points with index ``>= n_valid`` are padding. The last tile is taken flush with the end
    of the data when ``size`` does not divide it, and its points already counted by the
    tile before are masked out. One tile covering everything uses the arrays as they are.
    """
    n = y.shape[0]
    nominal = j * size
    start = jnp.minimum(nominal, n - size)
    gidx = start + jnp.arange(size)
    mask = (gidx >= nominal) & (gidx < n_valid)
    if size == n:
        xs, ys, ss = x, y, sigma
    else:
        xs, ys = _take(x, start, size), _take(y, start, size)
        ss = None if sigma is None else _take(sigma, start, size)
    return reduction.partial(params, xs, ys, ss, mask, f_scale)


def tiled_pass(reduction: Reduction, params, x, y, sigma, n_valid, tile: int, f_scale):
    """Fold ``reduction`` over ``N = len(y)`` points in tiles of ``tile`` (static) points.

    Points with index ``>= n_valid`` are padding. When ``tile`` does not divide ``N``
    the last tile is taken flush with the end of the data and overlaps the previous one;
    its already-counted points are masked out, so no padded copy of the data is needed.
    A 2-D ``sigma`` (Cholesky factor) forces a single tile.
    """
    n = y.shape[0]
    size = n if (sigma is not None and sigma.ndim == 2) else min(int(tile), n)
    n_tiles = -(-n // size)

    def one(j):
        return tile_partial(reduction, params, x, y, sigma, n_valid, size, j, f_scale)

    if n_tiles == 1:
        return one(0)

    def body(acc, j):
        return reduction.combine(acc, one(j)), None

    acc, _ = lax.scan(body, reduction.zero(params.shape[0]), jnp.arange(n_tiles))
    return acc


class Layout(NamedTuple):
    """Data as the in-graph pass takes it: the first ``n`` points are real, the rest padding."""

    x: object
    y: object
    sigma: object  # None, (N,) on the device, or an (n, n) Cholesky factor
    n: int
    tile: int


def in_graph_executor(reduction: Reduction, layout: Layout, f_scale) -> Callable:
    """The traceable ``params -> reduction`` pass over ``layout`` (in-memory executor)."""

    def evaluate(params):
        return tiled_pass(reduction, params, layout.x, layout.y, layout.sigma, layout.n, layout.tile, f_scale)

    return evaluate


# -- layouts ----------------------------------------------------------------------------
def _aligned_empty(shape, dtype=np.float64) -> np.ndarray:
    n = int(np.prod(shape))
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + _ALIGN // itemsize, dtype)
    off = (-raw.ctypes.data % _ALIGN) // itemsize
    return raw[off : off + n].reshape(shape)


def device_array(a: np.ndarray, n_to: int):
    """``a`` (float64, last axis padded with edge values up to ``n_to``) as a device array
    (up to ``HOST_MAX_ELEMENTS`` values: as an aligned NumPy array, which the compiled
    call takes directly).

    The host copy is made 64-byte aligned so that ``device_put`` adopts it instead of
    copying again: peak memory is the caller's data plus one padded copy at most (none
    when the caller's array is already float64, aligned and needs no padding).
    """
    a = np.asarray(a)
    n = a.shape[-1]
    fits = a.dtype == np.float64 and a.flags.c_contiguous and a.ctypes.data % _ALIGN == 0
    if n_to == n and fits:
        return a if a.size <= HOST_MAX_ELEMENTS else jax.device_put(a)
    out = _aligned_empty(a.shape[:-1] + (n_to,))
    out[..., :n] = a
    if n_to > n:
        out[..., n:] = a[..., -1:]
    return out if out.size <= HOST_MAX_ELEMENTS else jax.device_put(out)


def lay_out(x, y, sigma, *, tile: int, pad_to: int) -> Layout:
    """x, y and a 1-D sigma padded to ``pad_to`` points on the device; a 2-D sigma replaced
    by its Cholesky factor (the data is then one unpadded tile)."""
    n = int(np.shape(y)[0])
    if sigma is not None:
        sigma = np.asarray(sigma, np.float64)
        if sigma.ndim == 2:
            sigma = np.linalg.cholesky(sigma)  # lower factor L: r = L^-1 (f - y)
            pad_to, tile = n, n
    x, y = device_array(x, pad_to), device_array(y, pad_to)
    if sigma is not None and sigma.ndim == 1:
        sigma = device_array(sigma, pad_to)
    return Layout(x, y, sigma, n, int(tile))


def bucket_size(n: int) -> int:
    """Smallest ``m * 2**e >= n`` with ``8 <= m < 16`` (1/8-octave buckets: <= 12.5% padding)."""
    if n <= 16:
        return n
    e = max(n.bit_length() - 4, 0)
    m = -(-n // (1 << e))
    return m << e


def standard_layout(n: int) -> tuple[int, int]:
    """``(padded size, tile)`` the standard strategy uses for ``n`` points.

    Up to a few tiles' worth, the data is one block (no scan, no partial last tile); above,
    bucket sizes ``m * 2**e`` (``e >= 13``) are multiples of STANDARD_TILE: tiles fit exactly.
    """
    size = bucket_size(n)
    return size, (size if size <= 4 * STANDARD_TILE else STANDARD_TILE)


def lay_out_standard(x, y, sigma) -> Layout:
    size, tile = standard_layout(int(np.shape(y)[0]))
    return lay_out(x, y, sigma, tile=tile, pad_to=size)


def lay_out_chunked(x, y, sigma, chunk_size: int) -> Layout:
    return lay_out(x, y, sigma, tile=max(1, int(chunk_size)), pad_to=int(np.shape(y)[0]))
