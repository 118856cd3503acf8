"""Chunk sources: how the chunked and streaming strategies see data.

The engine never does I/O. It consumes a *chunk source*: an object that, for each pass,
yields ``Chunk(x, y, sigma)`` blocks of at most ``chunk_size`` points, always in the same
order, so that sums accumulated over a pass are bit-for-bit reproducible (which is what
makes resume-from-checkpoint exact).

``ArrayChunkSource`` serves in-memory arrays. File, ``memory://`` and ``s3://`` sources
live in :mod:`nlsq_tasks.io.sources` and satisfy the same protocol.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..limits import DEFAULT_CHUNK_SIZE


class Chunk(NamedTuple):
    """One block of data. ``x`` is ``(m,)`` or ``(k, m)`` (k features, SciPy layout);
    ``y`` and ``sigma`` are ``(m,)``; ``sigma`` is None when the source has none."""

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray | None = None


@runtime_checkable
class ChunkSource(Protocol):
    """What the engine needs from a data set it may not hold in memory.

    Attributes
    ----------
    n_points: total number of points.
    n_features: 1 for 1-D x, k for x of shape (k, n).
    chunk_size: the largest number of points a chunk holds; every chunk but the last
        holds exactly this many.
    has_sigma: whether chunks carry per-point sigma.
    """

    n_points: int
    n_features: int
    chunk_size: int
    has_sigma: bool

    def fingerprint(self) -> str:
        """A stable identity of the data (name, size, modification stamp or content hash).
        Checkpoints record it so that a checkpoint of other data is refused."""
        ...

    def chunks(self, start: int = 0) -> Iterator[Chunk]:
        """Yield chunks ``start, start+1, ...`` in order. Each call starts a new pass."""
        ...

    def sample(self, n: int, seed: int = 0) -> Chunk:
        """A reproducible subsample of about ``n`` points (warm start, multi-start screening)."""
        ...


def n_chunks(source: ChunkSource) -> int:
    return -(-source.n_points // source.chunk_size)


class ArrayChunkSource:
    """A chunk source over arrays already in memory (views, no copies)."""

    def __init__(self, x, y, sigma=None, chunk_size: int = DEFAULT_CHUNK_SIZE):
        self.x = np.asarray(x)
        self.y = np.asarray(y)
        self.sigma = None if sigma is None else np.asarray(sigma)
        self.n_points = int(self.y.shape[0])
        self.n_features = 1 if self.x.ndim == 1 else int(self.x.shape[0])
        self.chunk_size = int(max(1, min(chunk_size, self.n_points)))
        self.has_sigma = self.sigma is not None

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.x, self.y, self.sigma):
            if a is not None:
                h.update(str(a.shape).encode())
                h.update(np.ascontiguousarray(a).tobytes())
        return "array:" + h.hexdigest()[:32]

    def _take(self, sl) -> Chunk:
        x = self.x[sl] if self.x.ndim == 1 else self.x[:, sl]
        return Chunk(x, self.y[sl], None if self.sigma is None else self.sigma[sl])

    def chunks(self, start: int = 0) -> Iterator[Chunk]:
        for lo in range(start * self.chunk_size, self.n_points, self.chunk_size):
            yield self._take(slice(lo, min(lo + self.chunk_size, self.n_points)))

    def sample(self, n: int, seed: int = 0) -> Chunk:
        n = min(n, self.n_points)
        idx = np.sort(np.random.default_rng(seed).choice(self.n_points, size=n, replace=False))
        return self._take(idx)
