"""One fit across processes and nodes: ``jax.distributed`` set-up and the multi-process fit.

Every process of the job runs the same program (SPMD). :func:`initialize` joins the job
before JAX touches a device; afterwards ``jax.devices()`` lists every process's devices
and :func:`fit_distributed` spreads the points over all of them (the sharded passes of
:mod:`nlsq_tasks.engine.sharded`): each process reads only the rows of its own devices
from the source, the per-device partials are folded in device order, and the trust-region
step is replicated, so every process ends with the same ``popt``.

Where the job's shape comes from (:func:`spec_from_env`), first match wins:

- **explicit**: ``coordinator``/``num_processes``/``process_id`` arguments, or the
  ``NLSQ_COORDINATOR``, ``NLSQ_NUM_PROCESSES``, ``NLSQ_PROCESS_ID`` variables (any launcher;
  the tests use it with local processes on 127.0.0.1);
- **SLURM** (``srun`` inside an allocation: ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``,
  ``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``): JAX's own detection
  (``jax.distributed.initialize()`` without arguments);
- **PBS** (``PBS_NODEFILE``, ``PBS_JOBID``, one process per node): the nodes come from
  :class:`~nlsq_tasks.workflow.ClusterDetector`, the coordinator is the first node, the
  port is derived from the job id (or ``NLSQ_COORDINATOR_PORT``) and the process id is
  ``NLSQ_PROCESS_ID`` (the launch script sets it per node: PBS has no per-task rank).

Only process 0 writes (checkpoints here; results and artifacts in the runner); a
re-launch of the same job resumes from the latest checkpoint, which process 0 reads and
broadcasts.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

logger = logging.getLogger("nlsq_tasks")

SOURCES = ("explicit", "slurm", "pbs")
DEFAULT_PORT_BASE = 47_000  # PBS: coordinator port = base + (job id hash % 1000) unless given
# A process that stops answering is declared dead after this many seconds (JAX's default
# is 100; NLSQ_HEARTBEAT_TIMEOUT_S overrides); the job then fails instead of hanging.
HEARTBEAT_TIMEOUT_S = 30


@dataclass(frozen=True)
class DistributedSpec:
    """How this process joins the job (``coordinator`` None: JAX detects it, e.g. SLURM)."""

    source: str
    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    local_device_ids: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int_env(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name)
    try:
        v = int(str(raw).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{name}={raw!r} is not valid; allowed: an integer >= 0") from None
    if v < 0:
        raise ValueError(f"{name}={raw!r} is not valid; allowed: an integer >= 0")
    return v


def _pbs_port(env: Mapping[str, str]) -> int:
    if env.get("NLSQ_COORDINATOR_PORT"):
        return _int_env(env, "NLSQ_COORDINATOR_PORT")
    job = env.get("PBS_JOBID", "nlsq")
    return DEFAULT_PORT_BASE + zlib.crc32(job.encode()) % 1000


def spec_from_env(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
                  env: Mapping[str, str] | None = None) -> DistributedSpec | None:
    """The job this process belongs to, or None for a plain single-process run (see the
    module docstring for the order). Inconsistent settings raise ValueError naming them."""
    env = os.environ if env is None else env
    explicit = [coordinator, num_processes, process_id]
    if any(v is not None for v in explicit) or env.get("NLSQ_COORDINATOR"):
        coord = coordinator or env.get("NLSQ_COORDINATOR")
        n = num_processes if num_processes is not None else (_int_env(env, "NLSQ_NUM_PROCESSES") if env.get("NLSQ_NUM_PROCESSES") else None)
        pid = process_id if process_id is not None else (_int_env(env, "NLSQ_PROCESS_ID") if env.get("NLSQ_PROCESS_ID") else None)
        missing = [k for k, v in (("coordinator", coord), ("num_processes", n), ("process_id", pid)) if v is None]
        if missing:
            raise ValueError(f"an explicit jax.distributed job needs coordinator, num_processes and process_id; "
                             f"missing {missing} (arguments or NLSQ_COORDINATOR / NLSQ_NUM_PROCESSES / NLSQ_PROCESS_ID)")
        return _checked(DistributedSpec("explicit", str(coord), int(n), int(pid)))
    if all(k in env for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")):
        n = _int_env(env, "SLURM_NTASKS")
        if n <= 1:
            return None
        return _checked(DistributedSpec("slurm", None, n, _int_env(env, "SLURM_PROCID")))
    if env.get("PBS_NODEFILE") and env.get("NLSQ_PROCESS_ID") is not None:
        from .workflow import ClusterDetector

        nodes = ClusterDetector().pbs_nodes()
        if not nodes:
            raise ValueError(f"PBS_NODEFILE={env.get('PBS_NODEFILE')!r} lists no readable hosts")
        if len(nodes) <= 1:
            return None
        return _checked(DistributedSpec("pbs", f"{nodes[0]}:{_pbs_port(env)}", len(nodes), _int_env(env, "NLSQ_PROCESS_ID")))
    return None


def _checked(spec: DistributedSpec) -> DistributedSpec:
    n, pid = spec.num_processes, spec.process_id
    if n is not None and n < 1:
        raise ValueError(f"num_processes={n} is not valid; allowed: >= 1")
    if n is not None and pid is not None and not 0 <= pid < n:
        raise ValueError(f"process_id={pid} is not valid for num_processes={n}; allowed: 0 to {n - 1}")
    if spec.coordinator is not None and ":" not in spec.coordinator:
        raise ValueError(f"coordinator={spec.coordinator!r} is not valid; allowed: host:port")
    return spec


def initialize(spec: DistributedSpec | None, *, timeout_s: int = 300) -> dict[str, Any]:
    """Join the job described by ``spec`` (None: nothing to join). Call it before anything
    else touches JAX devices. CPU processes exchange data over gloo. Returns what was done."""
    import jax

    if spec is None:
        return {"distributed": False, "process_index": 0, "process_count": 1}
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices need a collective backend
    heartbeat = _int_env(os.environ, "NLSQ_HEARTBEAT_TIMEOUT_S") if os.environ.get("NLSQ_HEARTBEAT_TIMEOUT_S") else HEARTBEAT_TIMEOUT_S
    kwargs: dict[str, Any] = {"initialization_timeout": int(timeout_s), "heartbeat_timeout_seconds": max(1, heartbeat)}
    if spec.source == "slurm":
        jax.distributed.initialize(cluster_detection_method="slurm", **kwargs)
    else:
        jax.distributed.initialize(spec.coordinator, num_processes=spec.num_processes, process_id=spec.process_id,
                                   local_device_ids=spec.local_device_ids, **kwargs)
    return {"distributed": True, "source": spec.source, "process_index": jax.process_index(),
            "process_count": jax.process_count(), "coordinator": spec.coordinator}


def is_writer() -> bool:
    """True in the process that writes checkpoints, results and artifacts (process 0)."""
    import jax

    return jax.process_index() == 0


# -- the multi-process fit ----------------------------------------------------------------
def fit_distributed(f, source, open_shares, *, p0=None, bounds=None, workflow="auto", goal=None, checkpoint=None,
                    checkpoint_every: int | None = None, **kwargs):
    """Fit ``f`` to a :class:`~nlsq_tasks.engine.sources.ChunkSource`-like ``source`` over
    every device of the (multi-process) job; returns the same ``FitResult`` in every process.

    ``open_shares(rows)`` returns a source over the same data in chunks of ``rows`` points
    with ``read_chunk(j)`` (e.g. ``nlsq_tasks.io.open_source(uri, chunk_size=rows,
    readahead=0)``): each process reads share ``d`` for each of its own devices ``d`` --
    and nothing else but the small sample every process draws identically for the plan.
    ``checkpoint`` (a CheckpointSink) is written by process 0 only, every
    ``checkpoint_every`` passes (default: the preset's ``every_passes``, else 1).
    The strategy is ``standard`` or ``chunked`` (each process's rows live in device
    memory): a preset asking for streaming runs chunked here, and the plan says so.
    """
    import jax

    from . import _validate as V
    from ._plan import UNBOUNDED, make_plan, model_fn
    from .api import FIT_KWARGS, _finish, _probe
    from .engine.sharded import lay_out_rows, run_sharded

    t0 = time.perf_counter()
    V.check_kwargs(kwargs, FIT_KWARGS, "fit_distributed")
    n = int(source.n_points)
    sample = source.sample(min(n, 4096), seed=0)  # identical in every process: one plan everywhere
    sdata = V.check_data(sample.x, sample.y, sample.sigma, check_finite=True, nan_policy=None)
    from .planning import resolve_workflow

    preset = resolve_workflow(workflow)
    note = None
    if kwargs.get("strategy") is None:
        ps = getattr(getattr(preset, "strategy", None), "value", getattr(preset, "strategy", None))
        kwargs["strategy"] = ps if ps in ("standard", "chunked") else "chunked"
        if ps not in (None, "auto", "standard", "chunked"):
            note = (f"preset {getattr(preset, 'name', workflow)!r} asks for {ps}; a jax.distributed job keeps each "
                    "process's rows in device memory, so it runs chunked")
    plan = make_plan(
        f, probe=_probe(sdata.x), guess_xy=(sdata.x, sdata.y), n_points=n, n_features=int(source.n_features),
        p0=p0, bounds=UNBOUNDED if bounds is None else bounds, method=None, workflow=workflow, goal=goal,
        memory_limit_gb=None, options=kwargs, absolute_sigma=bool(kwargs.pop("absolute_sigma", False)), covariance=False,
    )
    if note:
        plan.notes.append(note)
        plan.fit_plan = plan.fit_plan.replace(reason=f"{plan.reason}; {note}")
    ex = plan.execution
    if not ex.sharded:
        # One process, one device: the same segmented program on a one-device mesh, so
        # checkpoints and resume work the same way.
        from .engine.sharded import Execution, shard_layout

        rows, tile = shard_layout(n, 1, plan.strategy, getattr(plan.config, "chunk_size", None))
        ex = Execution(ex.backend, ex.device_kind, 1, 1, rows, tile, True, f"{ex.reason}; one device, checkpointed")
        plan.fit_plan = plan.fit_plan.replace(devices={**plan.fit_plan.devices, **ex.to_dict()})
    m = int(ex.rows_per_device)
    shares = open_shares(m)
    read = [0]

    def rows(lo: int, hi: int):
        read[0] += hi - lo
        return _rows(shares, lo // m, hi - lo)

    fill = (np.asarray(sdata.x)[..., 0], float(sdata.y[0]), None if sdata.sigma is None else float(sdata.sigma[0]))
    t_read = time.perf_counter()
    data = lay_out_rows(rows, n, int(source.n_features),
                        bool(source.has_sigma), fill, ex)
    t_read = time.perf_counter() - t_read
    every = checkpoint_every or getattr(getattr(preset, "checkpoint", None), "every_passes", None) or 1
    fp = _fingerprint(plan, source, ex)
    t_prep = time.perf_counter() - t0
    result = run_sharded(model_fn(plan.model), data, plan.p0, plan.lower, plan.upper, plan.options, plan.names,
                         strategy=plan.strategy, execution=ex, checkpoint=checkpoint, fingerprint=fp, every=every,
                         progress=plan.progress)
    result.timings["read_own_rows_s"] = t_read
    result.execution = {**ex.to_dict(), "process_index": jax.process_index(), "rows_read_here": read[0]}
    return _finish(result, plan, t0, t_prep)


def _rows(shares, chunk: int, k: int):
    c = shares.read_chunk(chunk)
    got = int(np.asarray(c.y).shape[0])
    if got != k:
        raise ValueError(f"rows of share {chunk}: expected {k}, the source gave {got}")
    return c.x, c.y, c.sigma


def _fingerprint(plan, source, ex) -> str:
    from .engine.checkpoint import problem_fingerprint

    fp = getattr(plan.model, "fingerprint", None)
    model = fp() if callable(fp) else repr(plan.model)
    o = plan.options
    return problem_fingerprint("sharded-loop", model, source.fingerprint(), int(source.n_points), plan.strategy,
                               ex.n_devices, ex.rows_per_device, ex.per_device_batch, o.loss, o.f_scale, o.ftol,
                               o.xtol, o.gtol, o.max_nfev, tuple(np.asarray(plan.p0).tolist()),
                               tuple(np.asarray(plan.lower).tolist()), tuple(np.asarray(plan.upper).tolist()))
