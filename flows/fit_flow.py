"""``fit_flow``: one model on one data set, as a Prefect 3 flow that only composes tasks.

DAG::

    check_policy (the worker's storage policy; reads nothing)
    check_request ─┐
    check_storage ─┼─> claim_run_dir ─> plan_fit ─> fit_standard | fit_chunked | fit_streaming
    inspect_data  ─┘                                      │
                                         ├─> validate_quality   (goal QUALITY or the preset asks)
                                         ├─> plot_fit           (PNG to storage; skipped without matplotlib)
                                         └─> publish_artifacts  (parameter table, report, links)

The checks run before any fit and write nothing, so a bad request (a place outside the
storage policy, unknown preset, unsafe expression, missing or non-numeric data, missing
bucket, refused credentials) ends FAILED with a message naming the field and leaves no
files. Each run then claims its own directory ``<storage_uri>/runs/<run name>/`` (never
overwriting another run's), and fit tasks store results there atomically, returning only
the summary dict and URIs; validation.json and fit.png are added to the same manifest.

A fit that did not succeed ends the run FAILED (``on_failed_fit='fail'``, the default) or
COMPLETED in a state named "Completed with warnings" (``'warn'``); its result is stored
either way.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from . import resolve as R
from . import tasks as T
from .request import DataSpec, FitRequest, FitSettings

_FIT_TASKS = {"standard": T.fit_standard, "chunked": T.fit_chunked, "streaming": T.fit_streaming}


def run_name_default() -> str:
    try:
        from prefect.runtime import flow_run

        return flow_run.name or "run"
    except Exception:
        return "run"


class FitFailedError(RuntimeError):
    """The fit ran and stored its result, but did not succeed (not converged, non-finite,
    out of evaluations); raised when the request's ``on_failed_fit`` is ``fail``."""


def run_fit(data: DataSpec, settings: FitSettings, storage_uri: str, *, artifacts: bool = True,
            run_name: str | None = None) -> dict[str, Any]:
    """The DAG for one data set (shared by ``fit_flow`` and each item of ``batch_fit_flow``).

    A fit that does not succeed still stores its result and artifacts, then raises
    :class:`FitFailedError` (``on_failed_fit='fail'``) or returns with ``fit_failed`` set
    (``'warn'``; ``fit_flow`` then ends in a "Completed with warnings" state)."""
    from nlsq_tasks.io.retry import retry_budget

    # Every storage call below (in tasks too: Prefect copies the context into task threads)
    # has the request's timeout and retry budget.
    with retry_budget(getattr(settings, "storage_retries", None), getattr(settings, "storage_timeout_s", None)):
        return _run_fit(data, settings, storage_uri, artifacts=artifacts, run_name=run_name)


def _run_fit(data: DataSpec, settings: FitSettings, storage_uri: str, *, artifacts: bool,
             run_name: str | None) -> dict[str, Any]:
    logger = get_run_logger()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    # The storage policy first, before anything is read: a request for a place this worker
    # does not serve fails here, naming the setting that would allow it.
    T.check_policy(data, settings, storage_uri)
    # Independent checks, submitted together; .result() raises the first failure.
    checked_f = T.check_request.submit(settings)
    storage_f = T.check_storage.submit(storage_uri, settings.storage)
    info_f = T.inspect_data.submit(data)
    checked, info = checked_f.result(), info_f.result()
    storage_f.result()
    paths = T.claim_run_dir(storage_uri, run_name or run_name_default(), settings.storage)
    timings["checks"] = time.perf_counter() - t

    t = time.perf_counter()
    plan = T.plan_fit(info, checked, settings)
    logger.info("strategy %s: %s", plan["strategy"], plan["reason"])
    timings["plan"] = time.perf_counter() - t

    t = time.perf_counter()
    fitted = _FIT_TASKS[plan["strategy"]](data, settings, checked, plan, paths)
    timings["fit"] = time.perf_counter() - t
    summary, uris = fitted["summary"], fitted["uris"]

    notes: list[str] = []
    validation = None
    if plan["validate"]:
        t = time.perf_counter()
        checked_v = T.validate_quality(data, settings, checked, plan, paths)
        validation, uris["validation"] = checked_v["validation"], checked_v["uri"]
        timings["validate"] = time.perf_counter() - t
    plot: dict[str, Any] = {}
    if settings.plot:
        t = time.perf_counter()
        plot = T.plot_fit(data, settings, summary, plan, paths)
        timings["plot"] = time.perf_counter() - t
        if plot.get("skipped"):
            notes.append(plot["skipped"])
            logger.warning(plot["skipped"])
        else:
            uris["plot"] = plot["uri"]
    plan = {**plan, "task_timings": timings}
    failed = not summary.get("success")
    if failed:
        notes.append(f"the fit did not succeed: {summary.get('status')}: {summary.get('message')}")
    artifact_ids = T.publish_artifacts(summary, plan, uris, validation, plot, notes) if artifacts else {}
    if failed and _on_failed_fit(settings) == "fail":
        raise FitFailedError(
            f"the fit did not succeed ({summary.get('status')}: {summary.get('message')}); its result is stored at "
            f"{uris.get('results_dir')}. Set on_failed_fit='warn' to end such runs COMPLETED with a warning."
        )
    if failed:
        logger.warning("the fit did not succeed (%s); on_failed_fit='warn': the run completes with a warning",
                       summary.get("status"))
    return {
        "fit_failed": failed,
        "success": summary.get("success"),
        "status": summary.get("status"),
        "message": summary.get("message"),
        "strategy": plan["strategy"],
        "reason": plan["reason"],
        "params": {k: v.get("value") for k, v in (summary.get("params") or {}).items()},
        "statistics": summary.get("statistics"),
        "validation": validation,
        "notes": notes,
        "uris": uris,
        "artifacts": artifact_ids,
        "timings": timings,
    }


@flow(name="nlsq-fit", persist_result=False, log_prints=False, validate_parameters=True)
def fit_flow(request: FitRequest) -> dict[str, Any]:
    """Fit one model to one data set: inspect, plan (memory budget + preset), fit, validate, publish.

    Returns a small dict: status, parameters, statistics, strategy and why, the URIs of the
    stored results and the ids of the artifacts.
    """
    storage_uri = request.storage_uri or R.default_storage_uri()
    out = {"storage_uri": storage_uri, **run_fit(request.data, request, storage_uri)}
    if out.get("fit_failed"):
        from prefect.states import Completed

        return Completed(data=out, name=WARNING_STATE,
                         message=f"the fit did not succeed: {out.get('status')}: {out.get('message')}")
    return out


WARNING_STATE = "Completed with warnings"


def _on_failed_fit(settings: FitSettings) -> str:
    v = getattr(settings, "on_failed_fit", "fail")
    return getattr(v, "value", v)
