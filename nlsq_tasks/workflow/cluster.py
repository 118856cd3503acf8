"""Where are we running: a PBS or SLURM allocation, a multi-GPU node, or a plain machine.

Detection reads the scheduler's environment (``PBS_NODEFILE``/``PBS_JOBID``;
``SLURM_JOB_NODELIST``/``SLURM_GPUS_ON_NODE``/``SLURM_JOB_ID``) and asks JAX for local GPUs.
It does not import or contact the scheduler. :meth:`ClusterDetector.detect` tries PBS,
then SLURM, then local GPUs.

A *single* local GPU is not reported as a cluster by :meth:`ClusterDetector.detect`: there
is nothing to distribute, so it returns None just as on a CPU-only machine (the reference
says None means "not in a cluster environment"). :meth:`ClusterDetector.detect_local_gpus`
still describes a single GPU, and :func:`get_multi_gpu_config` uses it, so one GPU gets a
one-device config.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ._checks import check_bool, check_int, check_str
from .tolerances import calculate_adaptive_tolerances

logger = logging.getLogger("nlsq_tasks.workflow")

SCHEDULERS = ("pbs", "slurm", "local", "unknown")
MAX_NODES = 100_000  # bounds SLURM range expansion: a typo like node[1-99999999] must not hang
INFINIBAND_SYSFS = Path("/sys/class/infiniband")


@dataclass
class ClusterInfo:
    """Resources of the detected environment.

    ``scheduler`` is one of 'pbs', 'slurm', 'local', 'unknown'; ``job_id`` the scheduler's
    job id; ``interconnect`` e.g. 'infiniband' when detectable. ``node_list`` has one entry
    per node (``len(node_list) == node_count``) or is empty when the names are unknown.
    """

    node_count: int
    gpus_per_node: int
    total_gpus: int
    node_list: list[str] = field(default_factory=list)
    scheduler: str = "unknown"
    job_id: str | None = None
    interconnect: str | None = None

    def __post_init__(self) -> None:
        self.node_count = check_int("node_count", self.node_count, minimum=1)
        self.gpus_per_node = check_int("gpus_per_node", self.gpus_per_node, minimum=0)
        self.total_gpus = check_int("total_gpus", self.total_gpus, minimum=0)
        if not isinstance(self.node_list, (list, tuple)) or not all(isinstance(n, str) for n in self.node_list):
            raise TypeError(f"node_list must be a list of host names (str), got {self.node_list!r}")
        self.node_list = list(self.node_list)
        if self.node_list and len(self.node_list) != self.node_count:
            raise ValueError(
                f"node_list has {len(self.node_list)} entries but node_count is {self.node_count}; "
                "they must agree (or node_list be empty)"
            )
        check_str("scheduler", self.scheduler, allowed=SCHEDULERS)
        check_str("job_id", self.job_id, optional=True)
        check_str("interconnect", self.interconnect, optional=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClusterInfo":
        """Rebuild from :meth:`to_dict` output. Unknown or missing keys are errors naming them."""
        if not isinstance(d, Mapping):
            raise TypeError(f"d must be a dict of ClusterInfo fields, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown ClusterInfo field(s) {unknown}; valid fields are {names}")
        missing = [n for n in ("node_count", "gpus_per_node", "total_gpus") if n not in d]
        if missing:
            raise ValueError(f"ClusterInfo dict is missing required field(s) {missing}")
        return cls(**dict(d))


@dataclass
class MultiGPUConfig:
    """Data-parallel layout over ``n_devices`` GPUs (shard along ``shard_axis``)."""

    n_devices: int
    shard_axis: int = 0
    use_pmap: bool = True
    use_pjit: bool = False
    per_device_batch_size: int = 10_000

    def __post_init__(self) -> None:
        self.n_devices = check_int("n_devices", self.n_devices, minimum=1)
        self.shard_axis = check_int("shard_axis", self.shard_axis, minimum=0)
        check_bool("use_pmap", self.use_pmap)
        check_bool("use_pjit", self.use_pjit)
        self.per_device_batch_size = check_int("per_device_batch_size", self.per_device_batch_size, minimum=1)

    @property
    def total_batch_size(self) -> int:
        """Points processed per step over all devices."""
        return self.n_devices * self.per_device_batch_size

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_batch_size": self.total_batch_size}


def expand_slurm_nodelist(nodelist: str) -> list[str]:
    """Expand SLURM's compressed host list, keeping zero padding.

    >>> expand_slurm_nodelist("gpu[01-03,07],login1")
    ['gpu01', 'gpu02', 'gpu03', 'gpu07', 'login1']
    >>> expand_slurm_nodelist("r[1-2]n[8-9]")
    ['r1n8', 'r1n9', 'r2n8', 'r2n9']
    """
    if not isinstance(nodelist, str):
        raise TypeError(f"nodelist must be a string, got {nodelist!r}")
    hosts: list[str] = []
    for expr in _split_top_level(nodelist.strip()):
        hosts.extend(_expand_host(expr, nodelist))
        if len(hosts) > MAX_NODES:
            raise ValueError(f"SLURM node list {nodelist!r} expands to more than {MAX_NODES} hosts")
    return list(dict.fromkeys(hosts))


def _split_top_level(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return [p.strip() for p in parts if p.strip()]


_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _expand_host(expr: str, whole: str) -> list[str]:
    m = _BRACKET.search(expr)
    if m is None:
        if "[" in expr or "]" in expr:
            raise ValueError(f"malformed SLURM node list {whole!r}: unbalanced brackets in {expr!r}")
        return [expr]
    head, tail = expr[: m.start()], expr[m.end() :]
    out: list[str] = []
    for item in m.group(1).split(","):
        r = _RANGE.match(item.strip())
        if r is None:
            raise ValueError(f"malformed SLURM node list {whole!r}: {item!r} is not N or N-M")
        lo_s, hi_s = r.group(1), r.group(2) or r.group(1)
        lo, hi = int(lo_s), int(hi_s)
        if hi < lo or hi - lo > MAX_NODES:
            raise ValueError(f"malformed SLURM node list {whole!r}: bad range {item!r}")
        width = len(lo_s)
        for k in range(lo, hi + 1):
            for rest in _expand_host(tail, whole):
                out.append(f"{head}{k:0{width}d}{rest}")
    return out


def _local_gpu_count() -> int:
    """GPUs JAX sees on this host (0 on CPU-only machines)."""
    import jax

    try:
        return sum(1 for d in jax.local_devices() if d.platform == "gpu")
    except RuntimeError:
        return 0


class ClusterDetector:
    """Detects PBS Pro and SLURM allocations and local GPUs.

    ``default_gpus_per_node`` is used when the scheduler does not say and JAX sees no GPU
    on this host (e.g. detection runs on a login or CPU node).
    """

    DEFAULT_GPUS_PER_NODE = 8

    def __init__(self, default_gpus_per_node: int = DEFAULT_GPUS_PER_NODE):
        self.default_gpus_per_node = check_int("default_gpus_per_node", default_gpus_per_node, minimum=1)
        self.infiniband_path = INFINIBAND_SYSFS

    def __repr__(self) -> str:
        return f"ClusterDetector(default_gpus_per_node={self.default_gpus_per_node})"

    # -- top level ---------------------------------------------------------------------
    def detect(self) -> ClusterInfo | None:
        """PBS, then SLURM, then local GPUs (two or more); None otherwise (see module docstring)."""
        if self.is_pbs_environment():
            info = self.detect_pbs()
            if info is not None:
                return info
        if self.is_slurm_environment():
            info = self.detect_slurm()
            if info is not None:
                return info
        info = self.detect_local_gpus()
        if info is not None and info.total_gpus >= 2:
            return info
        return None

    # -- PBS ---------------------------------------------------------------------------
    def is_pbs_environment(self) -> bool:
        """True when ``PBS_NODEFILE`` is set."""
        return bool(os.environ.get("PBS_NODEFILE"))

    def detect_pbs(self) -> ClusterInfo | None:
        """Nodes from ``PBS_NODEFILE`` (one line per slot: unique hosts, in order).

        None outside PBS, or when the node file cannot be read (logged as a warning).
        """
        nodes = self.pbs_nodes()
        if not nodes:
            return None
        return self._scheduler_cluster(nodes, self._gpus_per_node(None), "pbs", os.environ.get("PBS_JOBID"))

    def pbs_nodes(self) -> list[str]:
        """The unique hosts of ``PBS_NODEFILE`` in file order (one line per slot there);
        empty outside PBS or when the file cannot be read (logged). Touches no device, so
        a multi-process job can find its coordinator before JAX starts."""
        path = os.environ.get("PBS_NODEFILE")
        if not path:
            return []
        try:
            text = Path(path).read_text()
        except OSError as exc:
            logger.warning("PBS_NODEFILE=%s cannot be read (%s); not treating this as a PBS job", path, exc)
            return []
        nodes = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
        if not nodes:
            logger.warning("PBS_NODEFILE=%s lists no hosts; not treating this as a PBS job", path)
        return nodes

    # -- SLURM -------------------------------------------------------------------------
    def is_slurm_environment(self) -> bool:
        """True when ``SLURM_JOB_NODELIST`` (or the older ``SLURM_NODELIST``) is set."""
        return bool(os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST"))

    def detect_slurm(self) -> ClusterInfo | None:
        """Nodes from the expanded ``SLURM_JOB_NODELIST``; GPUs per node from ``SLURM_GPUS_ON_NODE``."""
        nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
        if not nodelist:
            return None
        nodes = expand_slurm_nodelist(nodelist)
        if not nodes:
            return None
        gpus = self._gpus_per_node(os.environ.get("SLURM_GPUS_ON_NODE"))
        job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_JOBID")
        return self._scheduler_cluster(nodes, gpus, "slurm", job_id)

    def _scheduler_cluster(self, nodes: list[str], gpus: int, scheduler: str, job_id: str | None) -> ClusterInfo:
        """The ClusterInfo of a scheduler's allocation: the same GPU count on every node."""
        return ClusterInfo(
            node_count=len(nodes),
            gpus_per_node=gpus,
            total_gpus=gpus * len(nodes),
            node_list=nodes,
            scheduler=scheduler,
            job_id=job_id or None,
            interconnect=self._interconnect(),
        )

    # -- local -------------------------------------------------------------------------
    def detect_local_gpus(self) -> ClusterInfo | None:
        """This host's GPUs as seen by JAX; None when there are none."""
        n = _local_gpu_count()
        if n == 0:
            return None
        return ClusterInfo(
            node_count=1,
            gpus_per_node=n,
            total_gpus=n,
            node_list=[socket.gethostname()],
            scheduler="local",
            interconnect=self._interconnect(),
        )

    # -- helpers -----------------------------------------------------------------------
    def _gpus_per_node(self, scheduler_value: str | None) -> int:
        if scheduler_value:
            try:
                n = int(scheduler_value.strip())
                if n >= 0:
                    return n
            except ValueError:
                pass
            logger.warning("ignoring unreadable GPU count %r from the scheduler", scheduler_value)
        local = _local_gpu_count()
        return local if local > 0 else self.default_gpus_per_node

    def _interconnect(self) -> str | None:
        try:
            if self.infiniband_path.is_dir() and any(self.infiniband_path.iterdir()):
                return "infiniband"
        except OSError:
            pass
        return None


def create_distributed_config(cluster_info: ClusterInfo) -> dict[str, Any]:
    """Settings for a multi-node streaming fit on ``cluster_info``.

    Each node reads ``chunk_size`` points per step (100k per GPU, within [1e3, 1e6]),
    checkpoints every ``checkpoint_frequency`` chunks, and runs one multi-start candidate
    per GPU (at most 64). Tolerances are those of the HUGE tier (1e-6), as in the
    ``hpc_distributed`` preset.
    """
    if not isinstance(cluster_info, ClusterInfo):
        raise TypeError(f"cluster_info must be a ClusterInfo, got {type(cluster_info).__name__}")
    gpus = max(cluster_info.gpus_per_node, 1)
    chunk_size = min(max(100_000 * gpus, 1_000), 1_000_000)
    every = 100
    return {
        "strategy": "streaming",
        "scheduler": cluster_info.scheduler,
        "job_id": cluster_info.job_id,
        "node_count": cluster_info.node_count,
        "gpus_per_node": cluster_info.gpus_per_node,
        "total_gpus": cluster_info.total_gpus,
        "chunk_size": chunk_size,
        "per_device_batch_size": chunk_size // gpus,
        "enable_checkpoints": True,
        "checkpoint_frequency": every,
        "checkpoint_every_chunks": every,
        "n_starts": min(max(cluster_info.total_gpus, 1), 64),
        "tolerances": calculate_adaptive_tolerances(10_000_000),
        "interconnect": cluster_info.interconnect,
    }


def get_multi_gpu_config(cluster_info: ClusterInfo | None = None) -> MultiGPUConfig | None:
    """A data-parallel config over this node's GPUs; None when there are none.

    With ``cluster_info=None`` the environment is detected (PBS, SLURM, then local GPUs,
    a single GPU included).
    """
    if cluster_info is None:
        # Auto-detection answers for *this* host: a PBS job seen from a CPU node has no GPUs here.
        if _local_gpu_count() == 0:
            return None
        detector = ClusterDetector()
        cluster_info = detector.detect() or detector.detect_local_gpus()
        if cluster_info is None:
            return None
    elif not isinstance(cluster_info, ClusterInfo):
        raise TypeError(f"cluster_info must be a ClusterInfo or None, got {type(cluster_info).__name__}")
    if cluster_info.gpus_per_node < 1:
        return None
    return MultiGPUConfig(n_devices=cluster_info.gpus_per_node)
