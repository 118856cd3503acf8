"""Host-driven passes: executors that evaluate chunks wherever they like and hand back
per-chunk partials in chunk order.

A :class:`HostExecutor` serves a pass for a stack of ``K`` trial parameter rows
``(K, p)``: :meth:`HostExecutor.partials` yields one :class:`ChunkPartial` per chunk,
**in chunk order**, starting at chunk ``start`` (the resume cursor). The value of each
is the reduction's partial for every trial row (a pytree with a leading ``K`` axis).
The driver folds them with the reduction's ``combine`` (vmapped over ``K``), so the
executor never decides the summation order and never adds anything itself; it may
evaluate chunks anywhere (this process, a Dask worker holding the chunk) and in any
order, as long as it yields them in order.

:class:`SourceExecutor` is the in-process executor over a
:class:`~..sources.ChunkSource` (the streaming strategy and the validation pass use it).
A Dask executor maps :meth:`HostExecutor.chunk_ids` to workers, computes each chunk's
partial with :meth:`SourceExecutor.chunk_partial`-equivalent code next to the data, and
yields the results in order (buffering those that arrive early).

``y_moments`` (``(count, mean, M2)`` of the chunk's y, Chan et al.'s mergeable form) are
computed when asked, for :math:`\\sum (y - \\bar y)^2` without cancellation.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator, NamedTuple, Protocol

import jax
import numpy as np

from .._compiler import COMPILER_OPTIONS
from ..sources import Chunk, ChunkSource, n_chunks
from .in_memory import tiled_pass
from .reductions import Reduction, stacked_combine

# Points per cache-sized tile inside a chunk. Deliberately not STANDARD_TILE (8192, for
# the in-memory loop, one parameter row per tile): here the K trial rows (default 4) are
# vmapped inside each tile, and the larger tile measured faster: 3 parameters, K = 4, 4e6
# points in 262,144-point chunks, shared 2-core CPU, median 113 ms per pass at 16384 vs
# 127 ms at 8192 (same popt). The tile fixes the summation order, so changing it means a
# checkpoint written before would not resume bit-identically.
TILE = 16384


class ChunkPartial(NamedTuple):
    index: int  # chunk number within the pass
    n_points: int  # real points in the chunk
    value: object  # the reduction's partial, leading axis K (one per trial row)
    y_moments: tuple[float, float, float] | None  # (count, mean, M2) of y, when asked


class HostExecutor(Protocol):
    """What a host-driven pass needs from an executor (see module docstring)."""

    reduction: Reduction

    def chunk_ids(self) -> range: ...

    def partials(self, params_stack, start: int = 0, y_moments: bool = False) -> Iterator[ChunkPartial]: ...


def merge_moments(a, b):
    """Chan-Golub-LeVeque merge of ``(count, mean, M2)`` (``a`` before ``b``)."""
    na, ma, m2a = a
    nb, mb, m2b = b
    if na == 0:
        return b
    n = na + nb
    if nb == 0:
        return a
    delta = mb - ma
    return n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n


def evaluate(executor: HostExecutor, params_stack, start: int = 0, acc=None):
    """The whole pass: fold every partial from chunk ``start`` into ``acc`` (default zero), in order."""
    params_stack = np.atleast_2d(np.asarray(params_stack, np.float64))
    combine = stacked_combine_jit(executor.reduction)
    if acc is None:
        acc = zeros(executor.reduction, params_stack.shape[0], params_stack.shape[1])
    for part in executor.partials(params_stack, start):
        acc = combine(acc, part.value)
    return acc


def zeros(reduction: Reduction, k: int, n_params: int):
    """``k`` stacked identities of ``reduction``."""
    return jax.vmap(lambda _: reduction.zero(n_params))(np.arange(k))


@functools.lru_cache(maxsize=32)
def stacked_combine_jit(reduction: Reduction):
    return jax.jit(stacked_combine(reduction), compiler_options=COMPILER_OPTIONS)


@functools.lru_cache(maxsize=32)
def _chunk_fn(reduction: Reduction, tile: int):
    """The partials of one padded chunk at each of the K parameter rows.

    The chunk is walked in cache-sized tiles (:func:`~.in_memory.tiled_pass`, a
    ``lax.scan``) and the K rows are ``vmap``-ed inside it, so each tile of data is read
    once for all K trials and the ``K x p x tile`` Jacobian stays in cache. (A vmap of
    one whole-chunk evaluation instead builds ``K x p x chunk_size`` temporaries:
    measured 9x slower for K = 4 and 262,144-point chunks.)
    """

    def one(p, x, y, s, n_valid, f_scale):
        return tiled_pass(reduction, p, x, y, s, n_valid, tile, f_scale)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None, None)), compiler_options=COMPILER_OPTIONS)


def pad_chunk(chunk: Chunk, m: int):
    """Pad to ``m`` points (edge values for x so the model stays finite) and build the mask."""
    k = int(np.asarray(chunk.y).shape[0])
    pad = m - k
    x = np.asarray(chunk.x, dtype=np.float64)
    y = np.asarray(chunk.y, dtype=np.float64)
    s = np.ones(k) if chunk.sigma is None else np.asarray(chunk.sigma, dtype=np.float64)
    if pad:
        x = np.pad(x, ((0, pad),) if x.ndim == 1 else ((0, 0), (0, pad)), mode="edge")
        y = np.pad(y, (0, pad))
        s = np.pad(s, (0, pad), constant_values=1.0)
    return x, y, s, np.arange(m) < k


class SourceExecutor:
    """Evaluates every chunk of a :class:`ChunkSource` in this process, in order.

    ``check(chunk, j, source, offset)`` (optional) vets each chunk before use and raises a
    clear error naming it (the streaming strategy passes its chunk checks).
    """

    def __init__(self, reduction: Reduction, source: ChunkSource, f_scale: float = 1.0,
                 check: Callable | None = None, tile: int = TILE):
        self.reduction = reduction
        self.source = source
        self.m = int(source.chunk_size)
        self.f_scale = np.float64(f_scale)
        self.check = check
        self.fn = _chunk_fn(reduction, min(int(tile), self.m))

    def chunk_ids(self) -> range:
        return range(n_chunks(self.source))

    def chunk_partial(self, params_stack, chunk: Chunk, y_moments: bool = False):
        """``(n_points, value, y_moments)`` of one chunk at the K rows of ``params_stack``."""
        x, y, s, _ = pad_chunk(chunk, self.m)
        k = int(np.asarray(chunk.y).shape[0])
        value = self.fn(params_stack, x, y, s if self.source.has_sigma else None, np.int64(k), self.f_scale)
        mom = None
        if y_moments:
            yk = y[:k]
            mean = float(np.mean(yk))
            d = yk - mean
            mom = (float(k), mean, float(d @ d))
        return k, value, mom

    def partials(self, params_stack, start: int = 0, y_moments: bool = False) -> Iterator[ChunkPartial]:
        from .._stream_core import ChunkError

        params_stack = np.atleast_2d(np.asarray(params_stack, np.float64))
        total = n_chunks(self.source)
        for j, chunk in enumerate(self.source.chunks(start), start=start):
            if j >= total:
                raise ChunkError(f"chunk {j}: the source yields more than the {total} chunks its "
                                 f"n_points={self.source.n_points} and chunk_size={self.source.chunk_size} allow.")
            if self.check is not None:
                self.check(chunk, j, self.source, j * self.m)
            k, value, mom = self.chunk_partial(params_stack, chunk, y_moments)
            yield ChunkPartial(j, k, value, mom)
