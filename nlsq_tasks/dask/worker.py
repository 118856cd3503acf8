"""The worker half of the Dask pass executor: what runs inside each Dask worker process.

One fit registers one :class:`PassPlugin` (a ``distributed`` ``WorkerPlugin``) under a
name unique to the fit. Dask sends it once to every worker, including workers that join
or are restarted later, and calls :meth:`PassPlugin.setup` there. The plugin holds what
every chunk evaluation needs and what must not be rebuilt per task:

- the chunk source (a storage-backed :class:`~nlsq_tasks.engine.sources.ChunkSource`:
  a URI, the byte or row-group layout, storage options; no data), so the worker reads
  its own chunks from storage, never data shipped from the driver;
- the in-process pass executor of the engine (``passes.SourceExecutor``) built **once per
  worker**: its compiled chunk function (the K trial rows ``vmap``-ed inside the tiled
  pass) is traced and compiled on the first chunk of each trial count K and reused by
  every later task of the fit. Partials are computed by exactly the code the sequential
  executor runs, which is why they are bit-identical to it.

Tasks are module-level functions taking the plugin name: :func:`load_chunk` (read one
chunk, checked; the resident copy a Dask future keeps on the worker) and
:func:`eval_group` (the partials of a group of consecutive chunks, from resident chunks
or read on the spot). Storage errors are retried on the worker when transient
(``TransientStorageError``) and otherwise raised as :class:`ChunkReadError` naming the
chunk, its rows and the URI.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

READ_ATTEMPTS = 4  # 1 try + 3 retries of a transient storage error
_BACKOFF_S = (0.2, 1.0, 3.0)


class ChunkReadError(RuntimeError):
    """A worker could not read its chunk (the message names the chunk, its rows and the URI)."""


def _is_transient(exc: BaseException) -> bool:
    # Matched by class name so that this module does not import nlsq_tasks.io (and with it
    # fsspec) in processes that only evaluate resident chunks.
    return any(c.__name__ == "TransientStorageError" for c in type(exc).__mro__)


def read_one(source, j: int):
    """Chunk ``j`` of ``source`` alone: ``read_chunk`` when the source has it (no read-ahead
    of chunks this worker was not given), else the first chunk of a pass started at ``j``."""
    reader = getattr(source, "read_chunk", None)
    if reader is not None:
        return reader(j)
    it = iter(source.chunks(j))
    try:
        return next(it)
    finally:
        getattr(it, "close", lambda: None)()


class PassPlugin(WorkerPlugin):
    """Per-worker state of one fit's passes (see the module docstring)."""

    idempotent = False

    def __init__(self, name: str, reduction, source, f_scale: float, tile: int):
        self.name = name
        self.reduction = reduction
        self.source = source
        self.f_scale = float(f_scale)
        self.tile = int(tile)
        self._executor = None
        self.builds = 0  # how many times this worker built the compiled pass (must stay 1)
        self.reads = 0  # chunks read from storage by this worker
        self.tasks = 0  # chunk evaluations done by this worker

    def setup(self, worker=None):
        self._executor = None
        self.builds = self.reads = self.tasks = 0

    def teardown(self, worker=None):
        self._executor = None

    # -- once per worker ------------------------------------------------------------------
    @property
    def executor(self):
        if self._executor is None:
            from ..engine._stream_core import check_chunk
            from ..engine.passes import SourceExecutor

            self._executor = SourceExecutor(self.reduction, self.source, self.f_scale, check=check_chunk, tile=self.tile)
            self.builds += 1
        return self._executor

    def compiled_shapes(self) -> int:
        """Compiled variants of the chunk function in this process (one per trial count K)."""
        size = getattr(self.executor.fn, "_cache_size", None)
        return int(size()) if callable(size) else -1

    # -- reading --------------------------------------------------------------------------
    def read(self, j: int):
        """Chunk ``j`` read from storage and checked; transient errors retried here."""
        from ..engine._stream_core import check_chunk

        src = self.source
        lo = j * int(src.chunk_size)
        hi = min(lo + int(src.chunk_size), int(src.n_points))
        where = f"chunk {j} (points {lo}..{hi}) of {getattr(src, 'uri', src.fingerprint())}"
        for attempt in range(READ_ATTEMPTS):
            try:
                chunk = read_one(src, j)
                break
            except Exception as exc:  # noqa: BLE001  (classified: retried or re-raised naming the chunk)
                if _is_transient(exc) and attempt + 1 < READ_ATTEMPTS:
                    time.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
                    continue
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise ChunkReadError(f"{where}: could not be read{tries}: {type(exc).__name__}: {exc}") from None
        check_chunk(chunk, j, src, lo)
        self.reads += 1
        return chunk

    def partial(self, params_stack, j: int, chunk, y_moments: bool):
        k, value, mom = self.executor.chunk_partial(params_stack, chunk, y_moments)
        self.tasks += 1
        # numpy leaves: the same float64 bits, and nothing device-bound crosses the wire
        import jax

        return j, int(k), jax.tree_util.tree_map(np.asarray, value), mom


def _plugin(name: str) -> PassPlugin:
    worker = get_worker()
    try:
        return worker.plugins[name]
    except KeyError:
        raise RuntimeError(f"worker {worker.address} has no pass plugin {name!r} (was the fit's executor closed?)") from None


def load_chunk(name: str, j: int):
    """Task: read chunk ``j`` on this worker; the returned chunk stays resident as a future."""
    return _plugin(name).read(j)


def eval_group(name: str, params_stack: np.ndarray, first: int, count: int, y_moments: bool, *resident) -> dict[str, Any]:
    """Task: the partials of chunks ``first .. first+count-1`` at the K rows of ``params_stack``.

    ``resident``: the group's chunks, when they are held on the workers (Dask hands the
    task the objects the load futures computed); empty: read each chunk from storage here.
    """
    plugin = _plugin(name)
    if resident and len(resident) != count:
        raise RuntimeError(f"eval_group: {len(resident)} resident chunks for a group of {count}")
    reads0 = plugin.reads
    out = []
    for i in range(count):  # bounded by the group size
        chunk = resident[i] if resident else plugin.read(first + i)
        out.append(plugin.partial(params_stack, first + i, chunk, y_moments))
    return {"partials": out, "reads": plugin.reads - reads0, "worker": get_worker().address}


def worker_stats(name: str, dask_worker=None) -> dict[str, int]:
    """For ``client.run``: this worker's builds, compiled variants, reads and evaluations."""
    plugin = (dask_worker or get_worker()).plugins.get(name)
    if plugin is None:
        return {}
    compiled = plugin.compiled_shapes() if plugin._executor is not None else 0
    return {"builds": plugin.builds, "compiled": compiled, "reads": plugin.reads, "tasks": plugin.tasks}
