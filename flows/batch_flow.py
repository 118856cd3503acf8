"""``batch_fit_flow``: one model on many data sets, in batches of compiled fits.

Reads top to bottom:

1. ``check-request`` (preset, model, p0/bounds against the model) and ``list-datasets``
   (explicit URIs, a glob, or one ``.npz`` stack);
2. the data sets are cut into batches of ``B`` (the request's ``batch_size``, else enough
   for about 100 tasks, at least 100 data sets each): 1e4 data sets make 96 batch tasks,
   not 1e4 task runs;
3. each batch is one ``fit-batch`` task: it reads its own data sets (tasks pass URIs, never
   arrays), runs :func:`nlsq_tasks.fit_batch` (one compiled ``vmap`` over the batch) and
   writes one table ``<storage>/parts/batch-NNNNN.parquet``. A data set that cannot be read
   or fitted is a row with its error; the batch goes on. At most ``max_concurrency`` batch
   tasks are in flight (a sliding window, whatever the task runner);
4. ``combine-tables`` writes the final table ``<storage>/fits.parquet`` (CSV when pyarrow
   is missing), and a table artifact lists the failures first.

The final state says at a glance how it went: ``Completed`` when every data set fitted,
``Completed`` named **"Completed with failures"** with a message counting them when some
failed, ``Failed`` when none fitted.

With ``global_shared`` the request asks instead for one global fit across the listed data
sets (``fit-global``, :func:`nlsq_tasks.fit_global`), written as a result directory.

Task runner: a ``ThreadPoolTaskRunner`` by default; any other (a ``DaskTaskRunner`` from
prefect-dask) plugs in with ``batch_fit_flow.with_options(task_runner=...)``: batch tasks
are ordinary ``.submit()`` calls and concurrency is bounded by the window, not the runner.
The request's ``executor`` (a scheduler address or ``local-cluster:N``) does that itself:
the flow runs its body as a subflow on a ``DaskTaskRunner`` (:mod:`flows.dask_runner`).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

from prefect import flow, get_run_logger, task
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from . import resolve as R
from .artifacts import BATCH_KIND, artifact_key
from .batch_progress import BatchProgress, terminal_bar_stream
from .dask_runner import dask_task_runner, running_on_dask
from .fit_flow import deployment_label, run_name_default
from .request import BatchFitRequest
from .tasks import _RETRYING, check_request

MAX_DATASETS = 10_000  # files per request (a stack file may hold more)
MAX_STACK_SETS = 10_000_000
TARGET_TASKS = 96  # default batch size: about this many batch tasks in all...
MIN_BATCH = 100  # ...but at least this many data sets each
ARTIFACT_ROWS = 200
_BATCH_KEYWORDS = ("loss", "f_scale", "x_scale", "max_nfev", "ftol", "xtol", "gtol")


def batch_slices(n_sets: int, batch_size: Optional[int]) -> list[tuple[int, int]]:
    """``[start, stop)`` of every batch."""
    size = int(batch_size) if batch_size else max(MIN_BATCH, -(-n_sets // TARGET_TASKS))
    return [(s, min(s + size, n_sets)) for s in range(0, n_sets, size)]


@task(name="list-datasets", **_RETRYING)
def list_datasets(request: BatchFitRequest) -> dict[str, Any]:
    """``{"uris": [...]}`` (explicit, then the glob's sorted matches, no duplicates) or
    ``{"stack": uri, "n_sets": K}``."""
    from nlsq_tasks.io import check_glob, check_uri

    opts = request.data.resolved_options()
    # the worker's storage policy, before anything is listed or read
    for i, u in enumerate(request.data.uris):
        check_uri(u, "data", f"data.uris[{i}]")
    if request.data.stack:
        check_uri(request.data.stack, "data", "data.stack")
    if request.data.glob:
        check_glob(request.data.glob, "data.glob")
    if request.data.stack:
        from nlsq_tasks.io import stack_size

        k, _ = stack_size(request.data.stack, y_key=_key(request.data.y, "y"), storage_options=opts)
        if k > MAX_STACK_SETS:
            raise ValueError(f"data.stack holds {k} data sets; at most {MAX_STACK_SETS} per run")
        return {"stack": request.data.stack, "n_sets": k}
    uris = list(request.data.uris)
    if request.data.glob:
        from nlsq_tasks.io import resolve

        fs, path = resolve(request.data.glob, opts)
        proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        prefix = "" if proto in ("file", "local") else f"{proto}://"
        uris += [prefix + m for m in sorted(fs.glob(path))]
    out = list(dict.fromkeys(uris))
    if not out:
        raise ValueError(f"data.glob={request.data.glob!r} matched no files and data.uris is empty")
    if len(out) > MAX_DATASETS:
        raise ValueError(f"data: {len(out)} data sets; at most {MAX_DATASETS} files per batch run (use a stack file)")
    return {"uris": out, "n_sets": len(out)}


def _key(value, default: str) -> str:
    return value if isinstance(value, str) and value else default


def _stem(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _fit_arguments(request: BatchFitRequest, checked: dict) -> dict[str, Any]:
    from nlsq_tasks.workflow import Preset

    kwargs = dict(
        p0=request.p0, bounds=R.bounds_of(request, checked["n_params"]), absolute_sigma=request.absolute_sigma,
        workflow=Preset.model_validate(checked["preset"]), goal=request.goal_name,
        memory_limit_gb=request.memory_limit_gb,
    )
    kwargs.update({k: v for k, v in R.fit_keywords(request).items() if k in _BATCH_KEYWORDS})
    return kwargs


def _read_sets(request: BatchFitRequest, listing: dict, rows: tuple[int, int]):
    """Labels, (x, y, sigma) per readable set, and {position: error} for the others."""
    from nlsq_tasks.io import TransientStorageError, load_arrays, load_stack

    start, stop = rows
    opts = request.data.resolved_options()
    if "stack" in listing:
        sigma_key = None if request.data.ignore_sigma else _key(request.data.sigma, "sigma")
        x, y, s = load_stack(listing["stack"], rows, x_key=_key(request.data.x, "x"), y_key=_key(request.data.y, "y"),
                             sigma_key=sigma_key, storage_options=opts)
        name = _stem(listing["stack"])
        labels = [f"{name}[{i}]" for i in range(start, stop)]
        sets = [(x if x.ndim == 1 or x.shape[0] != y.shape[0] else x[j], y[j],
                 None if s is None else (s if s.ndim == 1 else s[j])) for j in range(stop - start)]
        return labels, sets, {}
    labels, sets, errors = [], [], {}
    for j, uri in enumerate(listing["uris"][start:stop]):
        labels.append(uri)
        try:
            sets.append(load_arrays(uri, storage_options=opts, **R.data_keywords(request.data.one(uri))))
        except TransientStorageError:
            raise  # the whole task retries
        except Exception as exc:  # unreadable: a row with its error, the batch goes on
            sets.append(None)
            errors[j] = f"{type(exc).__name__}: {exc}"
    return labels, sets, errors


def _fit_rows(request: BatchFitRequest, checked: dict, labels, sets, errors) -> dict[str, Any]:
    """One table for the batch, rows in data-set order (weighted and unweighted sets are
    fitted as two batches: a batch shares one sigma layout)."""
    import numpy as np

    from nlsq_tasks.batch import BatchFitResult, concat_tables, fit_batch

    model = R.resolve_request_model(request.model)
    names = list(checked["param_names"])
    kwargs = _fit_arguments(request, checked)
    tables, order = [], []
    groups = {True: [], False: []}
    for j, d in enumerate(sets):
        if d is not None:
            groups[d[2] is not None].append(j)
    for weighted, idx in groups.items():
        if not idx:
            continue
        try:
            res = fit_batch(model, [sets[j][0] for j in idx], [sets[j][1] for j in idx],
                            sigma=[sets[j][2] for j in idx] if weighted else None, invalid="skip",
                            labels=[labels[j] for j in idx], **kwargs)
        except Exception as exc:  # nothing in this group could be fitted: every row says why
            res = BatchFitResult.failed([labels[j] for j in idx], [f"{type(exc).__name__}: {exc}"] * len(idx), names)
        tables.append(res.to_table())
        order += idx
    if errors:
        tables.append(BatchFitResult.failed([labels[j] for j in errors], list(errors.values()), names).to_table())
        order += list(errors)
    table = concat_tables(tables)
    perm = np.argsort(np.asarray(order), kind="stable")
    return {k: (v[perm] if isinstance(v, np.ndarray) else [v[i] for i in perm]) for k, v in table.items()}


def _table_suffix() -> str:
    try:
        import pyarrow  # noqa: F401

        return "parquet"
    except ImportError:
        return "csv"


@task(name="fit-batch", **_RETRYING)
def fit_batch_task(request: BatchFitRequest, checked: dict, listing: dict, index: int, rows: tuple[int, int],
                   part_uri: str) -> dict[str, Any]:
    """Read, fit and tabulate one batch; returns counts and the part's URI (never arrays)."""
    from nlsq_tasks.io import write_table

    labels, sets, errors = _read_sets(request, listing, rows)
    table = _fit_rows(request, checked, labels, sets, errors)
    write_table(table, part_uri, storage_options=request.storage.resolved_options())
    ok = [bool(v) for v in table["success"]]
    failed = [(table["dataset"][i], table["error"][i] or table["message"][i]) for i, v in enumerate(ok) if not v]
    return {"index": index, "part": part_uri, "n": len(ok), "n_ok": sum(ok), "n_failed": len(failed), "failed": failed[:20]}


@task(name="combine-tables", **_RETRYING)
def combine_tables(request: BatchFitRequest, checked: dict, parts: list[str], lost: list[dict],
                   table_uri: str) -> dict[str, Any]:
    """The parts, in batch order, as one table (plus rows for batches whose task failed)."""
    from nlsq_tasks.batch import BatchFitResult, concat_tables
    from nlsq_tasks.io import read_table, write_table

    opts = request.storage.resolved_options()
    tables = [read_table(p, storage_options=opts) for p in parts]
    for b in lost:
        tables.append(BatchFitResult.failed(b["labels"], [b["error"]] * len(b["labels"]), checked["param_names"]).to_table())
    table = concat_tables(tables)
    write_table(table, table_uri, storage_options=opts)
    ok = [bool(v) for v in table["success"]]
    failed_first = sorted(range(len(ok)), key=lambda i: ok[i])[:ARTIFACT_ROWS]
    preview = [{c: _cell(table[c][i]) for c in _artifact_columns(checked) if c in table} for i in failed_first]
    return {"table": table_uri, "n": len(ok), "n_ok": sum(ok), "n_failed": len(ok) - sum(ok), "preview": preview}


def _artifact_columns(checked: dict) -> list[str]:
    return ["dataset", "status", "redchi", "r2"] + [c for n in checked["param_names"] for c in (n, f"{n}_stderr")] + ["error"]


def _cell(v):
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        return f"{float(v):.6g}"
    return v if isinstance(v, (str, int, bool)) else str(v)


@task(name="fit-global", **_RETRYING)
def fit_global_task(request: BatchFitRequest, checked: dict, listing: dict, storage_uri: str) -> dict[str, Any]:
    """One global fit over every listed data set (shared parameters from the request)."""
    import json

    from nlsq_tasks.batch import fit_global
    from nlsq_tasks.io import ResultStore, write_table

    labels, sets, errors = _read_sets(request, listing, (0, int(listing["n_sets"])))
    if errors:
        first = next(iter(errors.items()))
        raise ValueError(f"a global fit needs every data set; {len(errors)} could not be read, e.g. {labels[first[0]]}: {first[1]}")
    kwargs = _fit_arguments(request, checked)
    kwargs.pop("memory_limit_gb", None)
    if any(s[2] is None for s in sets):
        sets = [(x, y) for x, y, _ in sets]
    result = fit_global(R.resolve_request_model(request.model), sets, shared=list(request.global_shared), **kwargs)
    opts = request.storage.resolved_options()
    paths = R.layout(storage_uri)
    uris = dict(ResultStore(paths["results_dir"], opts).write(result, extra_files={
        "global.json": json.dumps({"datasets": labels, "shared": result.shared_names, "per_set": result.local_names}).encode()}))
    vals, errs = result.per_set()
    per_set = {"dataset": labels, "n_points": result.set_points}
    for j, n in enumerate(result.local_names):
        per_set[n], per_set[f"{n}_stderr"] = vals[:, j], errs[:, j]
    uris["per_set_table"] = write_table(per_set, R.join(storage_uri, f"per_set.{_table_suffix()}"), storage_options=opts)
    return {"summary": result.summary(), "report": result.report(), "uris": uris, "success": bool(result.success)}


@flow(name="nlsq-batch-fit", persist_result=False, validate_parameters=True,
      task_runner=ThreadPoolTaskRunner(max_workers=8))
def batch_fit_flow(request: BatchFitRequest):
    """Fit one model to many data sets in batches; returns counts, the table URI and the artifact id."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from .ownership import claim_run_dir, owner_record
    from .tasks import _flow_run_id

    logger = get_run_logger()
    runner = dask_task_runner(request.executor)
    if runner is not None and not running_on_dask():
        # The request asks for Dask: the same flow as a subflow whose tasks run on the
        # cluster; its final state (e.g. "Completed with failures") is this run's.
        logger.info("fit tasks on Dask (%s)", request.executor)
        child = batch_fit_flow.with_options(task_runner=runner)(request, return_state=True)
        data = child.result()  # raises the subflow's error when it failed
        if child.name != "Completed":
            return Completed(message=child.message, name=child.name, data=data)
        return data
    storage = request.storage_uri or R.default_storage_uri()
    R.check_policy(None, request.preset_spec, storage)  # the worker's storage policy first
    checked = check_request(request)
    listing = list_datasets(request)
    # the run's own directory (<storage>/runs/<run name>/), claimed once the checks passed:
    # two batch runs on one storage never overwrite each other's tables
    # (a plain call, not a task: a batch keeps its task runs to the fit batches)
    name = run_name_default()
    root = claim_run_dir(storage, name, request.storage.resolved_options(), owner_record(name, _flow_run_id()))
    n = int(listing["n_sets"])
    if request.global_shared:
        out = fit_global_task(request, checked, listing, root)
        create_markdown_artifact(markdown=f"```\n{out['report']}\n```", key=artifact_key("global-report", deployment_label()),
                                 description=f"Global fit of {n} data sets")
        return {"storage_uri": root, "n_datasets": n, "global": True, **out}

    slices = batch_slices(n, request.batch_size)
    logger.info("%d data sets in %d batches of at most %d, at most %d batches at a time",
                n, len(slices), slices[0][1] - slices[0][0], request.max_concurrency)
    progress = BatchProgress(n, stream=terminal_bar_stream())
    suffix = _table_suffix()
    done: dict[int, dict] = {}
    lost: list[dict] = []
    window: deque = deque()

    def collect():
        i, fut = window.popleft()
        fut.wait()
        try:
            out = fut.result()
        except Exception as exc:  # the task failed after its retries: its data sets become rows with the error
            start, stop = slices[i]
            labels = _slice_labels(listing, start, stop)
            lost.append({"labels": labels, "error": f"batch task failed: {type(exc).__name__}: {exc}"})
            progress.advance(len(labels), len(labels))
            return
        done[i] = out
        progress.advance(out["n"], out["n_failed"])

    for i, rows in enumerate(slices):
        if len(window) >= request.max_concurrency:
            collect()
        part = R.join(root, "parts", f"batch-{i:05d}.{suffix}")
        window.append((i, fit_batch_task.submit(request, checked, listing, i, rows, part)))
    while window:
        collect()

    parts = [done[i]["part"] for i in sorted(done)]
    combined = combine_tables(request, checked, parts, lost, R.join(root, f"fits.{suffix}"))
    n_ok, n_failed = combined["n_ok"], combined["n_failed"]
    artifact = create_table_artifact(
        table=combined["preview"], key=artifact_key(BATCH_KIND, deployment_label()),
        description=f"Batch fit: {n_ok} of {n} data sets fitted, {n_failed} failed; table: {combined['table']}",
    )
    for b in sorted(done.values(), key=lambda o: o["index"]):
        for label, why in b["failed"][:5]:
            logger.warning("data set %s failed: %s", label, why)
    result = {
        "storage_uri": root, "table": combined["table"], "n_datasets": n, "n_ok": n_ok, "n_failed": n_failed,
        "n_batches": len(slices), "artifact": str(artifact),
    }
    if n_ok == 0:
        raise RuntimeError(f"no data set of the batch could be fitted ({n_failed} failed); see {combined['table']}")
    if n_failed:
        return Completed(message=f"{n_failed} of {n} data sets failed; see {combined['table']}",
                         name="Completed with failures", data=result)
    return result


def _slice_labels(listing: dict, start: int, stop: int) -> list[str]:
    if "stack" in listing:
        name = _stem(listing["stack"])
        return [f"{name}[{i}]" for i in range(start, stop)]
    return list(listing["uris"][start:stop])

