"""``fit_source(..., executor=...)``: checking the choice at the front door, and running a
planned fit's passes on a Dask cluster.

Any strategy runs as streaming passes on the cluster: with the data resident on the
workers that *is* the chunked strategy, executed where the data live (same iterates as
the standard solver, one pass per iteration), and without residency it is streaming.
The trust-region loop, checkpoints and the result stay on the driver.
"""

from __future__ import annotations

from typing import Any

from .cluster import ExecutorChoice, ExecutorChoiceError, connect, is_client, parse_executor


def check_executor(executor: Any, source, n_starts: int, nan_policy) -> Any:
    """``None`` for the in-process executor, else a Client or an :class:`ExecutorChoice`.

    Raises ``FitInputError``/``FitTypeError`` naming the field, the value and what is allowed."""
    from .. import _validate as V
    from .cluster import ALLOWED

    if executor is None:
        return None
    if not is_client(executor):
        try:
            choice = parse_executor(executor)
        except ExecutorChoiceError as exc:
            raise V.FitInputError("executor", executor, f"allowed: {ALLOWED}, or a distributed.Client.") from None
        if not choice.is_dask:
            return None
        executor = choice
    from .executor import check_remote_source

    try:
        check_remote_source(source)
    except TypeError as exc:
        raise V.FitTypeError("source", source, str(exc).removeprefix("source: ")) from None
    if nan_policy == "omit":
        raise V.FitInputError("nan_policy", nan_policy, "nan_policy='omit' re-chunks the data in this process, which "
                              "a Dask executor cannot do; clean the data, or use executor='local'.")
    if n_starts > 1:
        raise V.FitInputError("n_starts", n_starts, "multi-start fits run in this process; use n_starts=1 with a "
                              "Dask executor, or executor='local'.")
    return executor


def label(executor: Any) -> str:
    if isinstance(executor, ExecutorChoice):
        return f"dask:{executor}"
    return f"dask:{executor.scheduler.address}"


def run_on_dask(executor: Any, run_passes) -> tuple[Any, dict[str, Any]]:
    """Connect (or use the given Client), run ``run_passes(dask_executor)``, and return the
    result with the execution record (executor, workers, residency and why, time per pass)."""
    from .executor import DaskExecutor

    with connect(executor) as client:
        ex = DaskExecutor(client, label=label(executor))
        try:
            result = run_passes(ex)
        finally:
            ex.close()
    return result, dict(ex.record)
