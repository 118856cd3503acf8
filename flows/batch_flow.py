"""``batch_fit_flow``: one model on many data sets, with bounded concurrency.

Each data set runs the same DAG as :func:`~flows.fit_flow.fit_flow` inside a subflow
(``fit_one``), so it has its own run page, artifacts and result directory
(``<storage_uri>/<index>-<stem>/``). Subflows are submitted through a
``ThreadPoolTaskRunner(max_workers=request.max_concurrency)`` wrapper task; a data set
that fails is collected with its message (``return_state=True``) and loses none of the others.
The batch ends with a summary table artifact; it is FAILED only when every data set failed.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from . import resolve as R
from .artifacts import publish_batch_artifact
from .fit_flow import run_fit, run_name_default
from .request import BatchFitRequest, DataSpec, FitSettings

MAX_DATASETS = 10_000


@task(name="list-datasets", persist_result=False, cache_policy=NO_CACHE)
def list_datasets(request: BatchFitRequest) -> list[str]:
    """The explicit URIs, then the glob's matches (sorted), without duplicates."""
    uris = list(request.data.uris)
    if request.data.glob:
        from nlsq_tasks.io._fs import resolve

        fs, path = resolve(request.data.glob, request.data.resolved_options())
        proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        matches = sorted(fs.glob(path))
        prefix = "" if proto in ("file", "local") else f"{proto}://"
        uris += [prefix + m for m in matches]
    seen, out = set(), []
    for u in uris:
        if u not in seen:
            seen.add(u)
            out.append(u)
    if not out:
        raise ValueError(f"data.glob={request.data.glob!r} matched no files and data.uris is empty")
    if len(out) > MAX_DATASETS:
        raise ValueError(f"data: {len(out)} data sets; at most {MAX_DATASETS} per batch")
    return out


def _slug(i: int, uri: str) -> str:
    stem = uri.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{i:04d}-" + (re.sub(r"[^A-Za-z0-9_\-]", "-", stem)[:48] or "data")


@flow(name="nlsq-fit-one", persist_result=False, validate_parameters=False)
def fit_one(data: DataSpec, settings: FitSettings, storage_uri: str) -> dict[str, Any]:
    """One data set of a batch: the fit_flow DAG, as a subflow with its own artifacts."""
    return {"storage_uri": storage_uri, **run_fit(data, settings, storage_uri)}


@task(name="fit-dataset", persist_result=False, cache_policy=NO_CACHE)
def fit_dataset(data: DataSpec, settings: FitSettings, storage_uri: str) -> dict[str, Any]:
    """Runs one subflow and turns its final state into a row: never raises, so siblings go on."""
    state = fit_one(data, settings, storage_uri, return_state=True)
    if state.is_completed():
        out = state.result()
        return {"uri": data.uri, "ok": True, "summary": _summary_of(out), "uris": out.get("uris", {})}
    message = state.message or state.name
    try:
        state.result()
    except BaseException as exc:  # the subflow's own exception carries the clearest message
        message = f"{type(exc).__name__}: {exc}"
    return {"uri": data.uri, "ok": False, "error": message}


def _summary_of(out: dict) -> dict:
    return {
        "status": out.get("status"),
        "strategy": out.get("strategy"),
        "statistics": out.get("statistics"),
        "params": {k: {"value": v} for k, v in (out.get("params") or {}).items()},
    }


@flow(name="nlsq-batch-fit", persist_result=False, validate_parameters=True)
def batch_fit_flow(request: BatchFitRequest) -> dict[str, Any]:
    """Fit one model to each data set; returns counts, per-data-set rows and the summary artifact id."""
    logger = get_run_logger()
    root = request.storage_uri or R.default_storage_uri(run_name_default())
    uris = list_datasets(request)
    logger.info("batch of %d data sets, at most %d at a time", len(uris), request.max_concurrency)
    runner = ThreadPoolTaskRunner(max_workers=request.max_concurrency)
    with runner:
        futures = [
            runner.submit(fit_dataset, parameters={
                "data": request.data.one(u), "settings": request, "storage_uri": R.join(root, _slug(i, u)),
            })
            for i, u in enumerate(uris)
        ]
        outcomes = [f.result() for f in futures]
    artifact = publish_batch_artifact(outcomes)
    failed = [o for o in outcomes if not o["ok"]]
    for o in failed:
        logger.warning("data set %s failed: %s", o["uri"], o["error"])
    result = {
        "storage_uri": root,
        "n_datasets": len(outcomes),
        "n_ok": len(outcomes) - len(failed),
        "n_failed": len(failed),
        "outcomes": outcomes,
        "artifact": artifact,
    }
    if outcomes and len(failed) == len(outcomes):
        raise RuntimeError(f"every data set of the batch failed; first error: {failed[0]['error']}")
    return result
