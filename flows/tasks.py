"""Thin Prefect tasks around ``nlsq_tasks`` calls.

Each task resolves what it needs from the (small) request, calls the library, and returns
plain small data: dicts of numbers and URIs. Arrays never travel through Prefect: data are
loaded inside the fit tasks through :mod:`nlsq_tasks.io`, and results go to storage
through ``ResultStore`` (atomic writes). ``persist_result=False`` and ``NO_CACHE`` because
results live in our own storage, and a cached fit would hide a changed data file.

Retries: only on :class:`nlsq_tasks.io.TransientStorageError` (a network or service
hiccup), with exponential backoff. Bad input (a ValueError naming the field) fails at once.

Per-worker concurrency: the fit tasks hold one slot of the global concurrency limit
``nlsq-gpu-<hostname>`` while they run (``prefect.concurrency.sync.concurrency``) when that
limit exists. With no such limit, Prefect 3.9.1's ``concurrency()`` logs a warning
("Concurrency limits [...] do not exist - skipping acquisition") and does not block, but it
cost up to 2.4 s per call here; so :func:`worker_slot` reads the limit first and skips the
call when there is none (tests/flows/test_tasks.py covers both cases). To serialise GPU
fits on a worker: ``prefect gcl create nlsq-gpu-$(hostname) --limit 1``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from typing import Any, Optional

from prefect import task

# The library is imported here, once, by the thread that imports the flow, and not only
# lazily inside the tasks: tasks run concurrently in worker threads, and two threads making
# the first import of one package at the same time can deadlock in importlib
# (_DeadlockError on nlsq_tasks.io._errors, seen once in a fresh-clone test run).
import nlsq_tasks.api  # noqa: E402,F401
import nlsq_tasks.engine.validation  # noqa: E402,F401
import nlsq_tasks.io  # noqa: E402,F401
import nlsq_tasks.models  # noqa: E402,F401
import nlsq_tasks.workflow  # noqa: E402,F401
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from . import resolve as R
from .request import DataSpec, FitSettings, StorageCredentials

MAX_TRANSIENT_RETRIES = 3
PLAN_ARTIFACT_KEY = "nlsq-fit-plan"
PLOT_SAMPLE = 5000
PLOT_FULL_READ_POINTS = 2_000_000  # below this the plot task reads the data once for a uniform sample


def retry_on_transient_storage(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed on a transient storage error."""
    from nlsq_tasks.io import TransientStorageError

    try:
        state.result()
    except TransientStorageError:
        return True
    except BaseException:
        return False
    return False


_COMMON = dict(persist_result=False, cache_policy=NO_CACHE)
_RETRYING = dict(
    retries=MAX_TRANSIENT_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on_transient_storage,
    **_COMMON,
)


def worker_slot_name() -> str:
    return f"nlsq-gpu-{socket.gethostname().lower()}"


@contextmanager
def worker_slot():
    """Hold one slot of this worker's GPU limit while inside; no-op when no such limit exists.

    Existence is checked first with one read (about 10 ms here): on Prefect 3.9.1 a
    ``concurrency()`` call for a limit that does not exist still goes through the lease
    service and cost 0.05-2.4 s per task run on this machine (measured), for nothing.
    A limit deleted between the check and the acquisition is skipped by Prefect with a warning.
    """
    from prefect.concurrency.sync import concurrency

    name = worker_slot_name()
    if not _limit_exists(name):
        yield
        return
    with concurrency(name, occupy=1, strict=False):
        yield


def _limit_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        return False
    except Exception:  # API trouble: let concurrency() decide (it skips or raises as Prefect does)
        return True
    return True


# -- 0. check the request before anything else ------------------------------------------
def refusal(exc: BaseException) -> Optional[dict[str, str]]:
    """``{"refused": message}`` when ``exc`` is bad input (the request's fault, retrying cannot
    help); None for anything else, which the task then raises (transient storage errors retry).

    The checks return a refusal instead of raising so that the flow can end FAILED with the
    one message, without Prefect logging a traceback for each task and for the flow."""
    from nlsq_tasks.io import StorageNotFoundError, StoragePermissionError

    if isinstance(exc, (ValueError, StorageNotFoundError, StoragePermissionError)):
        return {"refused": str(exc)}
    return None


def _refusing(check):
    """Run ``check``; bad input comes back as a refusal (see :func:`refusal`)."""
    import functools

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except Exception as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            return refused

    return wrapper


@task(name="check-policy", **_COMMON)
@_refusing
def check_policy(data: DataSpec, settings: FitSettings, storage_uri: str) -> dict[str, Any]:
    """Every location of the request against the worker's storage policy; reads nothing."""
    return R.check_policy(data.uri, settings.preset_spec, storage_uri)


def checked_request(settings: FitSettings) -> dict[str, Any]:
    """The request's preset (after its overrides) and model, checked against p0/bounds."""
    opts = settings.storage.resolved_options()
    preset = R.apply_overrides(R.load_request_preset(settings.preset_spec, opts), settings)
    model = R.resolve_request_model(settings.model)
    names = list(model.param_names)
    R.check_parameters(settings, names)  # counts, and p0 within the bounds
    return {
        "preset": preset.to_dict(),
        "preset_name": R.preset_name(preset, settings.preset_spec),
        "model": getattr(model, "name", settings.model),
        "param_names": names,
        "n_params": len(names),
    }


@task(name="check-request", **_RETRYING)
@_refusing
def check_request(settings: FitSettings) -> dict[str, Any]:
    """Resolve the preset (by name, path or URI) and the model; check p0/bounds against it."""
    return checked_request(settings)


@task(name="check-storage", **_RETRYING)
@_refusing
def check_storage(storage_uri: str, creds: StorageCredentials) -> dict[str, Any]:
    """The storage location is reachable with these credentials (nothing is written)."""
    from .storage import check_writable_location

    return check_writable_location(storage_uri, creds.resolved_options())


@task(name="claim-run-dir", **_RETRYING)
def claim_run_dir(storage_uri: str, run_name: str, creds: StorageCredentials) -> dict[str, str]:
    """This run's own directory under <storage_uri>/runs/ (a sibling if the name is taken)."""
    from .ownership import claim_run_dir as claim
    from .ownership import owner_record

    run_dir = claim(storage_uri, run_name, creds.resolved_options(), owner_record(run_name, _flow_run_id()))
    return R.layout(storage_uri, run_dir)


def _flow_run_id() -> Optional[str]:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:
        return None


# -- 1. inspect ---------------------------------------------------------------------------
def data_info(data: DataSpec) -> dict[str, Any]:
    from nlsq_tasks.io import inspect_data as io_inspect

    info = io_inspect(data.uri, storage_options=data.resolved_options(), **R.data_keywords(data))
    return info.to_dict()


@task(name="inspect-data", **_RETRYING)
@_refusing
def inspect_data(data: DataSpec) -> dict[str, Any]:
    """Shape, dtype and size of the data set, from its metadata only."""
    return data_info(data)


def data_scan_note(strategy: str) -> str:
    """How (and whether) the data are checked for NaN and inf, for the plan."""
    if strategy == "streaming":
        return ("each chunk is checked for NaN/inf as the first pass reads it; the first bad point stops the fit, "
                "named by its index (no separate scan before the fit)")
    return "all points are checked for NaN/inf in memory before the fit; the first bad point is named by its index"


def plan_as_shown(plan: dict) -> dict[str, Any]:
    """The plan as the run stores and publishes it: with how the data are scanned for NaN/inf."""
    return {**plan, "data_scan": data_scan_note(plan["strategy"])}


# -- 2. plan ------------------------------------------------------------------------------
def plan_request(info: dict, checked: dict, settings: FitSettings):
    """The library's one planner on the request's inputs (what ``nlsq-flow plan`` prints, too)."""
    from nlsq_tasks import plan_fit as library_plan_fit
    from nlsq_tasks.workflow import Preset

    return library_plan_fit(
        n_points=int(info["n_points"]), n_features=int(info["n_features"]), n_params=int(checked["n_params"]),
        workflow=Preset.model_validate(checked["preset"]), goal=settings.goal_name,
        memory_limit_gb=settings.memory_limit_gb, strategy=settings.overrides.as_updates().get("strategy"),
        executor=settings.executor, has_sigma=bool(info.get("has_sigma")), **R.fit_keywords(settings),
    )


@task(name="plan-fit", **_COMMON)
def plan_fit(info: dict, checked: dict, settings: FitSettings) -> dict[str, Any]:
    """Every decision of the fit, once, with its reason: ``nlsq_tasks.plan_fit(...).to_dict()``.

    The fit task runs this plan as it is; nothing downstream decides again. The plan is
    shown in the UI as the markdown artifact ``nlsq-fit-plan`` (what will run and why).
    """
    plan = plan_request(info, checked, settings)
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=PLAN_ARTIFACT_KEY, markdown="### Fit plan\n```\n" + plan.describe() + "\n```",
                             description=f"{plan.strategy}: {plan.reason}"[:500])
    return plan.to_dict()


# -- 3. the fit -----------------------------------------------------------------------------
def _progress_reporter(plan: dict, checked: dict, settings: FitSettings, artifact: bool = True):
    """Progress against the fit's known bound: a Prefect progress artifact (``artifact``) and,
    under ``nlsq-flow`` on a terminal, a progress bar on stderr. None when neither is wanted."""
    from .progress import ProgressReporter, TerminalProgressBar, limits_from_plan, terminal_bar_wanted

    bar_wanted = terminal_bar_wanted()
    if not artifact and not bar_wanted:
        return None
    # the plan holds the bound: its strategy, chunking, starts and max_nfev
    unit, limit, segments = limits_from_plan(plan, checked["n_params"], plan.get("max_nfev"))
    bar = TerminalProgressBar(unit=unit) if bar_wanted else None
    return ProgressReporter(unit=unit, limit=limit, segments=segments, artifact=artifact, bar=bar)


def _paths(paths) -> dict[str, str]:
    """The run's layout (a dict from claim_run_dir; a plain storage_uri from older callers)."""
    return R.layout(paths) if isinstance(paths, str) else dict(paths)


def _store(result, settings: FitSettings, paths: dict, checked: dict, plan: dict, t0: float) -> dict[str, Any]:
    from nlsq_tasks.engine.result import json_safe
    from nlsq_tasks.io import ResultStore, read_bytes

    from .ownership import RUN_RECORD

    result.timings["task_total"] = time.perf_counter() - t0
    opts = settings.storage.resolved_options()
    # The request as it ran, credentials redacted, so a result directory explains itself.
    record = {"settings": R.redact(settings.model_dump(mode="json")), "plan": plan_as_shown(plan),
              "preset": checked["preset"]}
    extra = {R.REQUEST_FILE: json.dumps(json_safe(record), indent=2).encode()}
    try:  # the run's claim record, so that the manifest lists every file of the directory
        extra[RUN_RECORD] = read_bytes(R.join(paths["run_dir"], RUN_RECORD), opts)
    except FileNotFoundError:
        pass
    uris = dict(ResultStore(paths["results_dir"], opts).write(result, extra_files=extra))
    uris["results_dir"] = paths["results_dir"]
    return {"summary": result.summary(), "uris": uris}


@task(name="fit", **_RETRYING)
def fit_data(data: DataSpec, settings: FitSettings, checked: dict, plan: dict, paths: dict) -> dict:
    """Run the plan, then store the result in the run directory. A strategy that works in
    memory gets the data read once into arrays (``fit``); one that makes passes gets a chunk
    source (``fit_source``), with checkpoints under ``<storage_uri>/checkpoints``
    (resumable). The QUALITY pass is the flow's own task (validate-quality), so it is off here.

    Checkpointed fits lock the problem's checkpoints while they write them: a second live run
    of the same problem on the same storage is refused; a dead one's lock is taken over and
    its flow run marked CRASHED (flows.ownership)."""
    from nlsq_tasks import FitPlan, fit, fit_source
    from nlsq_tasks.engine.checkpoint import CheckpointError
    from nlsq_tasks.io import CheckpointStore, load_arrays, open_source
    from nlsq_tasks.strategies import get_strategy

    from .ownership import ProblemLock, mark_flow_run_crashed, owner_record

    t0 = time.perf_counter()
    paths = _paths(paths)
    fit_plan = FitPlan.from_dict(plan)
    spec = get_strategy(fit_plan.strategy)
    model = R.resolve_request_model(settings.model)
    common = dict(p0=settings.p0, bounds=R.bounds_of(settings, checked["n_params"]),
                  absolute_sigma=settings.absolute_sigma, plan=fit_plan.replace(validate=False))
    # a progress artifact when the fit makes passes over chunks (one compiled solve has no steps to show)
    reporter = _progress_reporter(plan, checked, settings, artifact=spec.chunks)
    if spec.in_memory:
        x, y, sigma = load_arrays(data.uri, storage_options=data.resolved_options(), **R.data_keywords(data))
        with worker_slot():
            result = fit(model, x, y, sigma=sigma, progress=reporter, **common)
    else:
        source = open_source(data.uri, storage_options=data.resolved_options(), chunk_size=fit_plan.chunk_size,
                             **R.data_keywords(data))
        keep = int((checked["preset"].get("checkpoint") or {}).get("keep_last") or 3)
        opts = settings.storage.resolved_options()
        store = CheckpointStore(paths["checkpoints_dir"], opts, keep_last=keep)
        executor = settings.executor if fit_plan.executor == "dask" else None  # the plan's Dask workers
        key = R.problem_key(settings.model, source.fingerprint(), checked["preset"], settings, fit_plan.chunk_size)
        owner = owner_record(paths["run_dir"].rstrip("/").rsplit("/", 1)[-1], _flow_run_id())
        with ProblemLock(paths["checkpoints_dir"], key, opts, owner, on_stale=mark_flow_run_crashed), worker_slot():
            try:
                result = fit_source(model, source, executor=executor, checkpoint=store, resume=settings.resume,
                                    progress=reporter, **common)
            except CheckpointError as exc:  # name the request's setting and the CLI flag, not only the library's keyword
                if "--no-resume" in str(exc):
                    raise
                raise CheckpointError(f"{exc} In a flow request: resume=false; on the CLI: --no-resume.") from None
    if reporter is not None:
        reporter.finish(result.status.name)
    return _store(result, settings, paths, checked, plan, t0)


# -- 4. validation ----------------------------------------------------------------------------
@task(name="validate-quality", **_RETRYING)
def validate_quality(data: DataSpec, settings: FitSettings, checked: dict, plan: dict, paths: dict) -> dict:
    """The QUALITY checks on the stored result; adds validation.json to it (and its manifest)."""
    from nlsq_tasks import FitPlan
    from nlsq_tasks.engine.result import json_safe
    from nlsq_tasks.engine.validation import validate_fit
    from nlsq_tasks.io import ResultStore, load_arrays, open_source, read_result
    from nlsq_tasks.strategies import get_strategy

    paths = _paths(paths)
    opts = settings.storage.resolved_options()
    result = read_result(paths["results_dir"], opts)
    fit_plan = FitPlan.from_dict(plan)
    model = R.resolve_request_model(settings.model)
    options = fit_plan.solver_options(absolute_sigma=settings.absolute_sigma)
    if not get_strategy(fit_plan.strategy).in_memory:
        source = open_source(data.uri, storage_options=data.resolved_options(), chunk_size=fit_plan.chunk_size,
                             **R.data_keywords(data))
        report = validate_fit(model.fn, None, None, None, result, options, source=source)
    else:
        x, y, sigma = load_arrays(data.uri, storage_options=data.resolved_options(), **R.data_keywords(data))
        report = validate_fit(model.fn, x, y, sigma, result, options)
    payload = json_safe(report.to_dict())
    ResultStore(paths["results_dir"], opts).add_files({R.VALIDATION_FILE: json.dumps(payload, indent=2).encode()})
    return {"validation": payload, "uri": paths["validation"]}


# -- 5. plot and artifacts --------------------------------------------------------------------
@task(name="plot-fit", **_RETRYING)
def plot_fit(data: DataSpec, settings: FitSettings, summary: dict, plan: dict, paths: dict) -> dict:
    """PNG of a data sample, the fit and the residuals, written to storage; skipped without matplotlib."""
    import numpy as np

    from nlsq_tasks.io import ResultStore, load_arrays, open_source

    from .plotting import matplotlib_available, render_fit_png

    if not matplotlib_available():
        return {"skipped": "matplotlib is not installed; the plot was skipped (pip install 'nlsq-flows[plot]')"}
    model = R.resolve_request_model(settings.model)
    source = open_source(data.uri, storage_options=data.resolved_options(), chunk_size=int(plan["chunk_size"]),
                         **R.data_keywords(data))
    n = int(source.n_points)
    if n <= PLOT_FULL_READ_POINTS:
        # Small enough to read once: a uniform random sample over the whole range (the
        # source's out-of-core sample reads a few blocks, which shows as clumps in a plot).
        x_all, y_all, _ = load_arrays(data.uri, storage_options=data.resolved_options(), **R.data_keywords(data))
        idx = np.sort(np.random.default_rng(0).choice(n, size=min(PLOT_SAMPLE, n), replace=False))
        x_s, y_s = (x_all[..., idx], y_all[idx])
    else:
        sample = source.sample(min(PLOT_SAMPLE, n), seed=0)
        x_s, y_s = np.asarray(sample.x), np.asarray(sample.y)
    popt = np.asarray(summary["popt"], dtype=float)
    y_fit = np.asarray(model.fn(x_s, *popt))
    curve = None
    if x_s.ndim == 1:  # the fitted curve on a dense grid, not just at the sampled points
        grid = np.linspace(float(x_s.min()), float(x_s.max()), 600)
        curve = (grid, np.asarray(model.fn(grid, *popt)))
    png = render_fit_png(x_s, y_s, y_fit, f"{checked_title(summary, settings)}", curve=curve)
    paths = _paths(paths)
    ResultStore(paths["results_dir"], settings.storage.resolved_options()).add_files({R.PLOT_FILE: png})
    # The run page shows the plot only from inside an artifact (a browser will not open a
    # worker's file:// path): a small copy travels to publish_artifacts, base64-encoded.
    from .artifacts import embeddable_png

    title = checked_title(summary, settings)
    small = embeddable_png(png, lambda dpi: render_fit_png(x_s, y_s, y_fit, title, curve=curve, dpi=dpi))
    return {"uri": paths["plot"], "png_base64": small}


def checked_title(summary: dict, settings: FitSettings) -> str:
    st = summary.get("statistics") or {}
    try:
        redchi = f"{float(st.get('redchi')):.4g}"
    except (TypeError, ValueError):
        redchi = str(st.get("redchi"))
    return f"{settings.model}  (n={st.get('n_points')}, reduced chi2={redchi})"


@task(name="publish-artifacts", **_COMMON)
def publish_artifacts(summary: dict, plan: dict, uris: dict, validation: Optional[dict], plot: dict,
                      notes: list[str], scope: str = "local") -> dict:
    """Markdown report with the plot, parameter table; keys specific to ``scope`` (deployment and data set)."""
    from .artifacts import publish_fit_artifacts

    return publish_fit_artifacts(summary, plan, uris, validation, plot, notes, scope=scope)
