"""Where passes run: the executor choice, connecting to a Dask cluster, and residency.

An *executor choice* is what a user, a plan or a flow request names:

- ``"local"``: the passes run in this process (the sequential executor; no Dask);
- ``"local-cluster:N"``: a temporary ``distributed.LocalCluster`` of ``N`` worker
  processes (one thread each), started for the fit and closed after it;
- a scheduler address (``"tcp://host:8786"``, ``"tls://..."``, ``"ucx://..."``,
  ``"inproc://..."``): an existing cluster (dask-jobqueue on PBS/SLURM, Kubernetes...);
- in :func:`nlsq_tasks.fit_source` also a ``distributed.Client`` object.

:func:`decide_residency` is the rule that keeps chunks on the workers: resident when the
data (float64, as the workers hold it) take at most ``fraction`` of the cluster's worker
memory. The rest is left for the pass's temporaries and for Dask, whose own thresholds
start spilling at 60 % of a worker's limit. The decision and its reason are recorded.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Iterator

ADDRESS_SCHEMES = ("tcp", "tls", "ucx", "inproc", "ws", "wss")
_LOCAL_CLUSTER = re.compile(r"^local-cluster:(\d+)$")
MAX_LOCAL_WORKERS = 256
RESIDENT_FRACTION = 0.5

ALLOWED = "'local', 'local-cluster:N' (N worker processes), or a scheduler address such as 'tcp://host:8786'"


class ExecutorChoiceError(ValueError):
    """An executor choice that is none of the allowed forms (names the field and value)."""

    def __init__(self, field: str, value: Any, why: str = ""):
        self.field, self.value = field, value
        super().__init__(f"{field}={value!r} is not an executor choice{why}; allowed: {ALLOWED}.")


@dataclass(frozen=True)
class ExecutorChoice:
    """A parsed executor choice: ``kind`` is ``local``, ``local-cluster`` or ``address``."""

    kind: str
    address: str | None = None
    n_workers: int | None = None

    @property
    def is_dask(self) -> bool:
        return self.kind != "local"

    def __str__(self) -> str:
        if self.kind == "local-cluster":
            return f"local-cluster:{self.n_workers}"
        return self.address if self.kind == "address" else "local"


def parse_executor(value: Any, field: str = "executor") -> ExecutorChoice:
    """Parse (and check) an executor choice string; errors name ``field`` and the value."""
    if isinstance(value, ExecutorChoice):
        return value
    if not isinstance(value, str):
        raise ExecutorChoiceError(field, value, f" (a {type(value).__name__})")
    text = value.strip()
    if text.lower() == "local":
        return ExecutorChoice("local")
    m = _LOCAL_CLUSTER.match(text.lower())
    if m:
        n = int(m.group(1))
        if not 1 <= n <= MAX_LOCAL_WORKERS:
            raise ExecutorChoiceError(field, value, f" (N={n} workers; N must be in [1, {MAX_LOCAL_WORKERS}])")
        return ExecutorChoice("local-cluster", n_workers=n)
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in ADDRESS_SCHEMES and rest:
        return ExecutorChoice("address", address=text)
    raise ExecutorChoiceError(field, value)


def is_client(obj: Any) -> bool:
    """A ``distributed.Client`` (checked without importing distributed when it is not loaded)."""
    import sys

    mod = sys.modules.get("distributed")
    return mod is not None and isinstance(obj, mod.Client)


@contextlib.contextmanager
def connect(choice: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``choice`` (a Client is used as is and left open; a
    temporary LocalCluster is closed on exit, whatever happens in the block)."""
    if is_client(choice):
        yield choice
        return
    choice = parse_executor(choice)
    if not choice.is_dask:
        raise ExecutorChoiceError("executor", str(choice), " (the local executor needs no cluster)")
    from distributed import Client, LocalCluster

    if choice.kind == "address":
        client = Client(choice.address, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    # processes: JAX is not fork-safe and holds the GIL while compiling; one thread per
    # worker so that the worker count is the parallelism the fit records.
    # Loopback only (scheduler, workers, the HTTP endpoint): it serves this process alone.
    cluster = LocalCluster(n_workers=choice.n_workers, threads_per_worker=1, processes=True,
                           dashboard_address="127.0.0.1:0", host="127.0.0.1")
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def worker_memory(client) -> dict[str, int]:
    """``{worker address: memory limit in bytes}`` (0 where a worker has no limit)."""
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    return {addr: int(w.get("memory_limit") or 0) for addr, w in sorted(info["workers"].items())}


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def decide_residency(data_bytes: int, memory: dict[str, int], resident: Any = "auto",
                     fraction: float = RESIDENT_FRACTION) -> tuple[bool, str]:
    """Whether the workers keep their chunks in memory between passes, and why.

    ``resident``: ``"auto"`` (the rule), or True/False to force it (recorded as forced)."""
    gb = 1e9
    if resident is True or resident is False:
        return bool(resident), f"resident={resident} was asked for"
    if resident != "auto":
        raise ValueError(f"resident={resident!r} is not allowed; use 'auto', True or False.")
    if not memory:
        return False, "no workers are connected"
    total = sum(memory.values())
    if any(v <= 0 for v in memory.values()):
        return False, ("a worker has no memory limit, so the cluster's memory is unknown: chunks are read "
                       "from storage every pass")
    limit = fraction * total
    if data_bytes <= limit:
        return True, (f"the data ({data_bytes / gb:.3g} GB as float64) fit in {fraction:.0%} of the workers' "
                      f"memory ({total / gb:.3g} GB on {len(memory)} workers): chunks stay resident after the "
                      "first pass")
    return False, (f"the data ({data_bytes / gb:.3g} GB as float64) exceed {fraction:.0%} of the workers' memory "
                   f"({total / gb:.3g} GB on {len(memory)} workers): every pass reads its chunks from storage")


def plan_residency(choice: Any, n_points: int, n_features: int, has_sigma: bool) -> dict[str, Any]:
    """What the plan records for a Dask executor before the fit: workers, memory, whether
    the chunks will stay resident, and why (the executor applies the same rule again to
    the workers it finds when the fit starts, and the result records that decision).

    ``local-cluster:N`` splits this machine's memory among its N workers (Dask's default),
    so its total is this machine's memory; an address is asked (a short connection)."""
    data_bytes = int(n_points) * (int(n_features) + 1 + int(bool(has_sigma))) * 8
    if is_client(choice):
        memory = worker_memory(choice)
        label = f"dask:{choice.scheduler.address}"
    else:
        choice = parse_executor(choice)
        label = f"dask:{choice}"
        if choice.kind == "local-cluster":
            import psutil

            total = int(psutil.virtual_memory().total)
            memory = {f"local-{i}": total // choice.n_workers for i in range(choice.n_workers)}
        else:
            with connect(choice) as client:
                memory = worker_memory(client)
    resident, reason = decide_residency(data_bytes, memory)
    return {"executor": label, "n_workers": len(memory), "worker_memory_bytes": sum(memory.values()),
            "data_bytes": data_bytes, "resident": resident, "resident_reason": reason}
