"""Prefect on Dask: the task runner a request's ``executor`` asks for (prefect-dask).

``local`` keeps the flow's own runner (threads in the flow's process). A scheduler address
gives a ``DaskTaskRunner`` connected to that cluster (dask-jobqueue on PBS/SLURM, the Dask
operator on Kubernetes: see infra/README.md); ``local-cluster:N`` a ``DaskTaskRunner`` that
starts a temporary ``LocalCluster`` of N worker processes (one thread each) for the run
and closes it after. The tasks then run in the Dask workers, which report to the same
Prefect API (prefect-dask ships the run context with each task).
"""

from __future__ import annotations

from typing import Any


def dask_task_runner(executor: str) -> Any:
    """A ``DaskTaskRunner`` for a Dask executor choice, None for ``local``."""
    from nlsq_tasks.dask import parse_executor

    choice = parse_executor(executor, field="executor")
    if not choice.is_dask:
        return None
    from prefect_dask import DaskTaskRunner

    if choice.kind == "address":
        return DaskTaskRunner(address=choice.address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": choice.n_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": "127.0.0.1:0", "host": "127.0.0.1"})


def running_on_dask() -> bool:
    """Whether the current flow run's tasks go to a DaskTaskRunner."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx is not None and type(ctx.task_runner).__name__ == "DaskTaskRunner"
