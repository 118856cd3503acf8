"""The driver half of the Dask pass executor.

The trust-region loop stays on the driver (:func:`~nlsq_tasks.engine.streaming.run_streaming`):
it asks, once per pass, for the partial sums of every chunk at the pass's K trial points.
:class:`DaskPasses` (a host executor of :mod:`nlsq_tasks.engine.passes`) answers on a
Dask cluster:

1. The chunks are cut into groups of consecutive chunk ids and group ``g`` is assigned
   to worker ``g mod W`` (workers sorted by address): the same worker every pass, so a
   worker that holds its chunks finds them again.
2. Resident data (:func:`~.cluster.decide_residency`): the first pass submits one load
   task per chunk, pinned to its worker; the futures are held by the driver for the
   whole fit, so the chunks stay in the workers' memory (managed, and spilled if need
   be, by Dask) and later passes read nothing. Otherwise each group task reads its
   chunks from storage itself.
3. Every group task returns the per-chunk partials (the reduction's value for the K rows,
   a few hundred bytes a chunk); the driver yields them **in chunk order**, and the
   streaming driver folds them with the reduction's ``combine`` from its ``zero``. No
   executor adds anything, so the answer is the sequential executor's, bit for bit,
   whatever the number of workers, and a checkpoint between chunks resumes exactly.

Faults are Dask's: a worker that dies mid-pass loses its tasks and its resident chunks;
the scheduler re-runs both elsewhere (the load tasks are pure functions of the chunk id,
``allow_other_workers=True``), and since every partial is a pure function of (chunk,
trial rows) the pass ends with the same numbers.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import numpy as np

from . import worker as _w
from .cluster import decide_residency, worker_memory

GROUPS_PER_WORKER = 4  # tasks per worker and pass: balance and failure granularity vs overhead


def data_bytes(source) -> int:
    """Bytes the source's data take as float64 arrays on the workers."""
    cols = int(source.n_features) + 1 + int(bool(source.has_sigma))
    return int(source.n_points) * cols * 8


def check_remote_source(source) -> None:
    """Only storage-backed sources can be read by workers: never ship data from the driver."""
    uri = getattr(source, "uri", None)
    if not isinstance(uri, str) or not hasattr(source, "read_chunk"):
        raise TypeError(
            f"source: a {type(source).__name__} cannot be read by Dask workers; the Dask executor needs a "
            "storage-backed source that workers open themselves (nlsq_tasks.io.open_source(uri, ...) on a path "
            "every worker can reach: a shared file system or an object store such as s3://)."
        )


class DaskExecutor:
    """Runs a fit's passes on a Dask cluster through a ``distributed.Client``.

    ``resident``: ``"auto"`` (keep chunks on the workers when they fit, see
    :func:`~.cluster.decide_residency`), True or False. ``groups_per_worker``: tasks per
    worker and pass. ``workers``: use only these worker addresses (default: all).
    :meth:`bind` gives the host executor of one fit; :attr:`record` is what the result
    records (executor, workers, residency and why, time per pass, per-worker counters).
    """

    def __init__(self, client, resident: Any = "auto", groups_per_worker: int = GROUPS_PER_WORKER,
                 label: str | None = None, workers: list[str] | None = None):
        self.client = client
        self.resident = resident
        self.only = None if workers is None else set(workers)
        self.groups_per_worker = max(1, int(groups_per_worker))
        self.label = label or f"dask:{client.scheduler.address}"
        self.record: dict[str, Any] = {"executor": self.label}
        self._bound: list[DaskPasses] = []
        # resident chunk futures by source identity: shared by every bind over the same data
        # (the fit's passes, then the validation pass and its re-fits), held until close()
        self._resident: dict[str, dict[int, Any]] = {}

    def bind(self, reduction, source, f_scale: float = 1.0, check=None, tile: int | None = None) -> "DaskPasses":
        from ..engine.passes import TILE

        check_remote_source(source)
        passes = DaskPasses(self, reduction, source, f_scale, TILE if tile is None else int(tile))
        self._bound.append(passes)
        return passes

    def close(self) -> None:
        """Record the fit's per-worker counters, release the resident chunks, remove the plugins."""
        if self._bound:
            try:
                stats = [p.worker_stats() for p in self._bound]
                self.record["worker_stats"] = stats[0]  # the fit's own passes
                # chunks read from storage by every pass over the data (fit, validation, re-fits)
                self.record["chunks_read"] = sum(w["reads"] for st in stats for w in st.values() if w)
            except Exception:  # noqa: BLE001  (a cluster already gone has no counters to give)
                pass
        for chunks in self._resident.values():
            for fut in chunks.values():
                fut.release()
        self._resident.clear()
        for p in self._bound:
            try:
                self.client.unregister_worker_plugin(p.name)
            except Exception:  # noqa: BLE001  (a cluster already gone has nothing left to remove)
                pass
        self._bound.clear()


class DaskPasses:
    """The host executor of one fit on the cluster (see the module docstring)."""

    def __init__(self, owner: DaskExecutor, reduction, source, f_scale: float, tile: int):
        from ..engine.sources import n_chunks

        self.owner = owner
        self.client = owner.client
        self.reduction = reduction
        self.source = source
        self.n = n_chunks(source)
        self.name = f"nlsq-pass-{uuid.uuid4().hex[:12]}"
        # The plugin carries the source (URI, layout, options) and the reduction (model,
        # loss) to every worker once; the compiled chunk function is built there, once.
        self.client.register_plugin(_w.PassPlugin(self.name, reduction, source, f_scale, tile), name=self.name)
        memory = worker_memory(self.client)
        if owner.only is not None:
            memory = {a: v for a, v in memory.items() if a in owner.only}
            if not memory:
                raise ValueError(f"workers={sorted(owner.only)}: none of them is connected to the scheduler")
        self.workers = sorted(memory)
        # Placement is a preference (a dead worker's chunks go elsewhere), except when the
        # caller restricted the fit to some workers.
        self.elsewhere = owner.only is None
        self.resident, self.resident_reason = decide_residency(data_bytes(source), memory, owner.resident)
        per_group = max(1, -(-self.n // (len(self.workers) * owner.groups_per_worker)))
        self.groups = [(g, min(g + per_group, self.n)) for g in range(0, self.n, per_group)]
        # resident chunk futures by chunk id; loaded by whichever bind over this data needs them first
        self._chunks: dict[int, Any] = owner._resident.setdefault(source.fingerprint(), {})
        self.pass_seconds: list[float] = []
        self.pass_reads: list[int] = []
        self.task_workers: set[str] = set()
        self.first = "pass_seconds" not in owner.record  # the first bind is the fit's own passes
        if self.first:
            owner.record.update(
                executor=owner.label, n_workers=len(self.workers), workers=list(self.workers),
                resident=self.resident, resident_reason=self.resident_reason, n_chunks=self.n,
                tasks_per_pass=len(self.groups), pass_seconds=self.pass_seconds, storage_reads=self.pass_reads,
            )

    # -- the HostExecutor protocol ---------------------------------------------------------
    def chunk_ids(self) -> range:
        return range(self.n)

    def _worker_of(self, group: int) -> str:
        return self.workers[group % len(self.workers)]

    def _resident_chunks(self, lo: int, hi: int, where: str) -> list:
        out = []
        for j in range(lo, hi):
            fut = self._chunks.get(j)
            if fut is None:
                fut = self.client.submit(_w.load_chunk, self.name, j, key=f"{self.name}-chunk-{j}", pure=False,
                                         workers=[where], allow_other_workers=self.elsewhere)
                self._chunks[j] = fut
            out.append(fut)
        return out

    def partials(self, params_stack, start: int = 0, y_moments: bool = False) -> Iterator:
        from ..engine.passes import ChunkPartial

        params_stack = np.atleast_2d(np.asarray(params_stack, np.float64))
        t0 = time.perf_counter()
        futures = []
        loaded = len(self._chunks)
        for g, (lo, hi) in enumerate(self.groups):
            if hi <= start:
                continue
            lo = max(lo, start)
            where = self._worker_of(g)
            deps = self._resident_chunks(lo, hi, where) if self.resident else []
            futures.append(self.client.submit(_w.eval_group, self.name, params_stack, lo, hi - lo, bool(y_moments),
                                              *deps, pure=False, workers=[where], allow_other_workers=self.elsewhere))
        reads = len(self._chunks) - loaded  # chunks first loaded (read by a worker) in this pass
        try:
            for fut in futures:  # in chunk order; later groups keep running meanwhile
                out = fut.result()
                reads += out["reads"]
                self.task_workers.add(out["worker"])
                for j, k, value, mom in out["partials"]:
                    yield ChunkPartial(j, k, value, mom)
        finally:
            for fut in futures:
                fut.release()
        self.pass_seconds.append(time.perf_counter() - t0)
        self.pass_reads.append(reads)
        if not self.first:  # later passes over the data (validation, its re-fits) are counted
            self.owner.record["other_passes"] = self.owner.record.get("other_passes", 0) + 1

    # -- after the fit -----------------------------------------------------------------------
    def worker_stats(self) -> dict[str, dict[str, int]]:
        """Per worker: builds of the compiled pass, compiled variants, reads, evaluations."""
        return self.client.run(_w.worker_stats, self.name)

