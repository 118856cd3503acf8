"""``fit_flow``: one model on one data set, as a Prefect 3 flow that only composes tasks.

DAG::

    check_request ─┐
    check_storage ─┼─> plan_fit ─> fit_standard | fit_chunked | fit_streaming
    inspect_data  ─┘                     │
                                         ├─> validate_quality   (goal QUALITY or the preset asks)
                                         ├─> plot_fit           (PNG to storage; skipped without matplotlib)
                                         └─> publish_artifacts  (parameter table, report, links)

The three checks run before any fit and write nothing, so a bad request (unknown preset,
unsafe expression, missing data, missing bucket, refused credentials) ends FAILED with a
message naming the field and leaves no result files. Fit tasks store their results
atomically and return only the summary dict and URIs.
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


def run_fit(data: DataSpec, settings: FitSettings, storage_uri: str, *, artifacts: bool = True) -> dict[str, Any]:
    """The DAG for one data set (shared by ``fit_flow`` and each item of ``batch_fit_flow``)."""
    logger = get_run_logger()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    # Independent checks, submitted together; .result() raises the first failure.
    checked_f = T.check_request.submit(settings)
    storage_f = T.check_storage.submit(storage_uri, settings.storage)
    info_f = T.inspect_data.submit(data)
    checked, info = checked_f.result(), info_f.result()
    storage_f.result()
    timings["checks"] = time.perf_counter() - t

    t = time.perf_counter()
    plan = T.plan_fit(info, checked, settings)
    logger.info("strategy %s: %s", plan["strategy"], plan["reason"])
    timings["plan"] = time.perf_counter() - t

    t = time.perf_counter()
    fitted = _FIT_TASKS[plan["strategy"]](data, settings, checked, plan, storage_uri)
    timings["fit"] = time.perf_counter() - t
    summary, uris = fitted["summary"], fitted["uris"]

    notes: list[str] = []
    validation = None
    if plan["validate"]:
        t = time.perf_counter()
        checked_v = T.validate_quality(data, settings, checked, plan, storage_uri)
        validation, uris["validation"] = checked_v["validation"], checked_v["uri"]
        timings["validate"] = time.perf_counter() - t
    plot: dict[str, Any] = {}
    if settings.plot:
        t = time.perf_counter()
        plot = T.plot_fit(data, settings, summary, plan, storage_uri)
        timings["plot"] = time.perf_counter() - t
        if plot.get("skipped"):
            notes.append(plot["skipped"])
            logger.warning(plot["skipped"])
        else:
            uris["plot"] = plot["uri"]
    plan = {**plan, "task_timings": timings}
    artifact_ids = T.publish_artifacts(summary, plan, uris, validation, plot, notes) if artifacts else {}
    return {
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
    storage_uri = request.storage_uri or R.default_storage_uri(run_name_default())
    out = run_fit(request.data, request, storage_uri)
    return {"storage_uri": storage_uri, **out}
