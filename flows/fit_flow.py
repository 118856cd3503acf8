"""``fit_flow``: one model on one data set, as a Prefect 3 flow that only composes tasks.

DAG::

    check_policy (the worker's storage policy; reads nothing)
    check_request ─┐
    check_storage ─┼─> claim_run_dir ─> plan_fit ─> fit_data  (runs the plan: any registered strategy)
    inspect_data  ─┘                                      │
                                         ├─> validate_quality   (when the plan says so)
                                         ├─> plot_fit           (PNG to storage; skipped without matplotlib)
                                         └─> publish_artifacts  (report with the plot, parameter table)

``plan_fit`` is ``nlsq_tasks.plan_fit`` on the request: the plan (strategy and why, chunking,
tolerances, starts, validation, devices, executor) is decided there once, shown as the
artifact ``nlsq-fit-plan`` and in the flow's result, and run as it is by ``fit_data``.

The checks run before any fit and write nothing, so a bad request (a place outside the
storage policy, unknown preset, unsafe expression, missing or non-numeric data, missing
bucket, refused credentials) ends FAILED with a message naming the field and leaves no
files. Each run then claims its own directory ``<storage_uri>/runs/<run name>/`` (never
overwriting another run's), and fit tasks store results there atomically, returning only
the summary dict and URIs; validation.json and fit.png are added to the same manifest.

A bad request is *refused*: the checks return its message instead of raising, and the flow
ends FAILED with that one message, logged once, with no traceback.

Names: a run is called ``<data set>-<model>-<YYYYmmdd-HHMMSS>``, and its results go to
``<storage_uri>/runs/<run name>/``. A Prefect retry keeps the run's name.

A fit that did not succeed ends the run FAILED (``on_failed_fit='fail'``, the default) or
COMPLETED in a state named "Completed with warnings" (``'warn'``); its result is stored
either way.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any, Optional

from prefect import flow, get_run_logger
from prefect.states import Failed

from . import resolve as R
from . import tasks as T
from .request import BUILTIN_MODELS, DataSpec, FitRequest, FitSettings

REFUSED = "request refused: "


class _RefusalsWithoutTraceback(logging.Filter):
    """A refused request is a user's mistake with one message, not a crash.

    When a deployment's flow run ends FAILED, Prefect's engine wrapper logs "Engine execution
    exited with unexpected exception" with a traceback of its own frames (4 to 15 of them),
    for our refusals too. This filter, on Prefect's flow-run logger, drops that record when
    the run was refused (the flow already logged the message, and the state carries it), and
    turns a parameter-validation failure into one line with the message. Every other error
    keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from prefect.exceptions import FailedRun, ParameterTypeError

        if isinstance(exc, FailedRun) and str(exc).startswith(REFUSED):
            return False
        if isinstance(exc, ParameterTypeError):
            record.msg, record.args = "%s", (str(exc),)
            record.exc_info = record.exc_text = None
        return True


def _install_log_filter() -> None:
    logger = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, _RefusalsWithoutTraceback) for f in logger.filters):
        logger.addFilter(_RefusalsWithoutTraceback())


_install_log_filter()


# -- names ----------------------------------------------------------------------------------------
def _slug(text: str, limit: int) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9_]+", "-", text)).strip("-")[:limit].strip("-")


def dataset_label(uri: str) -> str:
    """A data set's short name: its file name without the suffix (``s3://b/run42/decay.npz`` -> ``decay``)."""
    stem = str(uri).rstrip("/").rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem[1:] else stem
    return _slug(stem, 40) or "data"


def model_label(model: str) -> str:
    """A model's short name: the built-in name, or ``expr`` for an expression."""
    text = str(model).strip()
    return text if text in BUILTIN_MODELS or re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]{0,40}", text) else "expr"


def run_name_for(data_uri: str, model: str, when: Optional[float] = None) -> str:
    """``<data set>-<model>-<YYYYmmdd-HHMMSS>``: says which fit it is, and sorts by time."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return f"{dataset_label(data_uri)}-{model_label(model)}-{stamp}"


def _fit_run_name() -> str:
    """Prefect's ``flow_run_name`` hook: the name from the run's own parameters."""
    from prefect.runtime import flow_run

    request = (flow_run.parameters or {}).get("request")
    try:
        data = request.data if hasattr(request, "data") else request["data"]
        uri = data.uri if hasattr(data, "uri") else data["uri"]
        model = request.model if hasattr(request, "model") else request["model"]
        if model == "expression":
            model = "expr"
    except Exception:  # an invalid request still needs a name; validation reports it
        return f"fit-{time.strftime('%Y%m%d-%H%M%S')}"
    return run_name_for(uri, model)


def deployment_label() -> str:
    """The deployment this run belongs to, or ``local`` for a run started without one."""
    try:
        from prefect.runtime import deployment

        where = deployment.name or "local"
    except Exception:
        where = "local"
    return _slug(where, 30).lower().replace("_", "-") or "local"


def artifact_scope(data: DataSpec) -> str:
    """What artifact keys are specific to: the deployment (or ``local``) and the data set,
    so the Artifacts page shows one series per deployment and data set, not one for all."""
    return f"{deployment_label()}-{dataset_label(data.uri)}".lower().replace("_", "-")


# -- logs -----------------------------------------------------------------------------------------
def _g(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if math.isnan(f) else format(f, ".6g")


def outcome_line(summary: dict, where: str) -> str:
    """One line a scientist reads: status, reduced chi-square, parameters with errors, where."""
    st = summary.get("statistics") or {}
    params = ", ".join(
        f"{name}={_g(p.get('value'))}" + (f" ± {_g(p.get('stderr'))}" if p.get("stderr") is not None else "")
        for name, p in (summary.get("params") or {}).items()
    )
    state = "converged" if summary.get("success") else "did not converge"
    return (f"fit {state} ({summary.get('status')}): reduced chi2 {_g(st.get('redchi'))}, {params}; "
            f"results in {where}")


def plan_line(plan: dict) -> str:
    """The plan in one line, naming the strategy once."""
    reason = str(plan.get("reason") or "")
    if reason.lower().startswith("strategy"):
        return f"plan: {reason}"
    return f"plan: {plan['strategy']} strategy, because {reason}" if reason else f"plan: {plan['strategy']} strategy"


# -- the DAG --------------------------------------------------------------------------------------



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


def _refused(logger, messages: list[str]):
    """The one message of a refused request, logged once, as the run's Failed state."""
    message = REFUSED + "; ".join(messages)
    logger.error(message)
    return Failed(message=message)


def _run_fit(data: DataSpec, settings: FitSettings, storage_uri: str, *, artifacts: bool,
             run_name: str | None) -> dict[str, Any]:
    logger = get_run_logger()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    # The storage policy first, before anything is read: a request for a place this worker
    # does not serve fails here, naming the setting that would allow it.
    policy = T.check_policy(data, settings, storage_uri)
    if policy.get("refused"):
        return _refused(logger, [policy["refused"]])
    # Independent checks, submitted together; each returns {"refused": message} for bad input.
    checked_f = T.check_request.submit(settings)
    storage_f = T.check_storage.submit(storage_uri, settings.storage)
    info_f = T.inspect_data.submit(data)
    checked, storage_ok, info = checked_f.result(), storage_f.result(), info_f.result()
    refusals = [r["refused"] for r in (checked, storage_ok, info) if isinstance(r, dict) and r.get("refused")]
    if refusals:
        return _refused(logger, refusals)
    paths = T.claim_run_dir(storage_uri, run_name or run_name_default(), settings.storage)
    timings["checks"] = time.perf_counter() - t

    t = time.perf_counter()
    plan = T.plan_fit(info, checked, settings)
    logger.info(plan_line(plan))
    timings["plan"] = time.perf_counter() - t

    t = time.perf_counter()
    fitted = T.fit_data(data, settings, checked, plan, paths)
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
    shown = {**T.plan_as_shown(plan), "task_timings": timings}
    failed = not summary.get("success")
    if failed:
        notes.append(f"the fit did not succeed: {summary.get('status')}: {summary.get('message')}")
    artifact_ids = (T.publish_artifacts(summary, shown, uris, validation, plot, notes, artifact_scope(data))
                    if artifacts else {})
    logger.info(outcome_line(summary, uris.get("results_dir", storage_uri)))
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
        "plan": plan,
        "params": {k: v.get("value") for k, v in (summary.get("params") or {}).items()},
        "statistics": summary.get("statistics"),
        "validation": validation,
        "notes": notes,
        "uris": uris,
        "artifacts": artifact_ids,
        "timings": timings,
    }


@flow(name="nlsq-fit", flow_run_name=_fit_run_name, persist_result=False, log_prints=False, validate_parameters=True)
def fit_flow(request: FitRequest) -> dict[str, Any]:
    """Fit one model to one data set: inspect, plan (memory budget + preset), fit, validate, publish.

    Returns a small dict: status, parameters, statistics, strategy and why, the URIs of the
    stored results and the ids of the artifacts.
    """
    storage_uri = request.storage_uri or R.default_storage_uri()
    fitted = run_fit(request.data, request, storage_uri)
    if not isinstance(fitted, dict):  # refused: the Failed state carries the message
        return fitted
    out = {"storage_uri": storage_uri, **fitted}
    if out.get("fit_failed"):
        from prefect.states import Completed

        return Completed(data=out, name=WARNING_STATE,
                         message=f"the fit did not succeed: {out.get('status')}: {out.get('message')}")
    return out


WARNING_STATE = "Completed with warnings"


def _on_failed_fit(settings: FitSettings) -> str:
    v = getattr(settings, "on_failed_fit", "fail")
    return getattr(v, "value", v)
