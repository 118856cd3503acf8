"""Reading back what the flows stored: a FitResult from a result directory, and the
human description ``nlsq-flow inspect`` prints for a result or checkpoint location.

Tasks hand each other URIs, not results: the validation task rebuilds the
:class:`~nlsq_tasks.FitResult` it checks from the verified files of the result directory
(``nlsq_tasks.io.read_result`` refuses a directory whose manifest does not match).
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

import numpy as np


def _float(v: Any) -> float:
    try:
        return float(v)  # summary() writes inf/nan as strings; float() reads them back
    except (TypeError, ValueError):
        return math.nan


def fit_result_from_stored(stored: dict):
    """A FitResult rebuilt from ``nlsq_tasks.io.read_result(...)`` output (arrays from params.npz)."""
    from nlsq_tasks.engine.result import FitResult, FitStatistics
    from nlsq_tasks.engine.status import FitStatus

    s, p = stored["summary"], stored["params"]
    st = s.get("statistics", {})
    ssr, r2 = _float(st.get("rmse")) ** 2 * int(st.get("n_points", 0)), _float(st.get("r2"))
    # summary() stores r2 = 1 - ssr/sst, not sst itself.
    sst = ssr / (1.0 - r2) if math.isfinite(r2) and r2 < 1.0 else math.nan
    stats = FitStatistics(
        n_points=int(st.get("n_points", 0)), n_params=int(st.get("n_params", len(p["popt"]))),
        chi2=_float(st.get("chi2")), ssr=ssr, sst=sst,
    )
    return FitResult(
        popt=np.asarray(p["popt"], dtype=np.float64),
        pcov=np.asarray(p["pcov"], dtype=np.float64),
        status=FitStatus[s["status"]],
        nfev=int(s.get("nfev", 0)), njev=int(s.get("njev", 0)), nit=int(s.get("nit", 0)),
        cost=_float(st.get("cost")),
        stats=stats,
        param_names=[str(n) for n in p["param_names"]],
        lower=np.asarray(p["lower"], dtype=np.float64),
        upper=np.asarray(p["upper"], dtype=np.float64),
        grad_norm=_float(st.get("grad_norm")),
        strategy=s.get("strategy", "standard"),
        strategy_reason=s.get("strategy_reason", ""),
        budget=s.get("budget") or {},
        tolerances={k: _float(v) for k, v in (s.get("tolerances") or {}).items()},
        timings=s.get("timings") or {},
        loss=s.get("loss") or "linear",
        workflow=s.get("workflow"),
        goal=s.get("goal"),
        starts=[{**d, "cost": _float(d.get("cost"))} for d in (s.get("starts") or [])],
    )


# -- nlsq-flow inspect ------------------------------------------------------------------------
def describe_location(uri: str, storage_options: Optional[dict] = None) -> str:
    """A result directory (or a storage_uri holding ``results/``), or a checkpoint directory."""
    from nlsq_tasks.io import CheckpointStore, read_result
    from nlsq_tasks.io._fs import resolve

    from .resolve import CHECKPOINTS_DIR, RESULTS_DIR, join

    fs, path = resolve(uri, storage_options)
    lines: list[str] = []
    # a run directory, a storage_uri (its newest run under runs/), or a runs/ directory
    candidates = [uri, join(uri, RESULTS_DIR)] + _newest_runs(fs, path) + _newest_runs(fs, path.rstrip("/") + "/runs")
    for cand in candidates:
        _, cpath = resolve(cand, storage_options)
        if fs.exists(cpath.rstrip("/") + "/manifest.json") or fs.exists(cpath.rstrip("/") + "/summary.json"):
            lines += _describe_result(cand, storage_options, read_result)
            break
    for cand in (uri, join(uri, CHECKPOINTS_DIR)):
        _, cpath = resolve(cand, storage_options)
        if fs.exists(cpath.rstrip("/") + "/latest.json") or _has_checkpoints(fs, cpath):
            store = CheckpointStore(cand, storage_options)
            latest = store.describe_latest()
            lines += ["", f"checkpoints at {cand}: {len(store.list())} stored"]
            if latest:
                lines += [f"  latest: {json.dumps(latest, default=str)}"]
            break
    if not lines:
        if not fs.exists(path):
            raise FileNotFoundError(f"{uri} does not exist")
        raise ValueError(f"{uri} holds neither a result (manifest.json/summary.json) nor checkpoints")
    return "\n".join(lines).strip()


def _newest_runs(fs, path: str) -> list[str]:
    """Run directories (with a run.json) directly under ``path``, newest first."""
    try:
        entries = [e for e in fs.ls(path, detail=True) if e.get("type") == "directory"]
    except (FileNotFoundError, NotADirectoryError):
        return []
    runs = []
    for e in entries[:10_000]:
        name = e["name"].rstrip("/")
        try:
            started = json.loads(fs.cat_file(name + "/run.json")).get("started", "")
        except (FileNotFoundError, ValueError):
            continue
        runs.append((str(started), name))
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    prefix = "" if proto in ("file", "local") else f"{proto}://"
    return [prefix + n for _, n in sorted(runs, reverse=True)]


def _has_checkpoints(fs, path: str) -> bool:
    try:
        # checkpoints sit in one directory per problem (p-<hash>/), or at the top (older stores)
        return any(str(e).endswith(".nlsqckpt") or str(e).rstrip("/").rsplit("/", 1)[-1].startswith("p-")
                   for e in fs.ls(path, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return False


def _describe_result(uri: str, storage_options, read_result) -> list[str]:
    lines = [f"result at {uri}"]
    try:
        stored = read_result(uri, storage_options)
    except Exception as exc:  # IncompleteResultError says what is missing
        return lines + [f"  INCOMPLETE: {exc}"]
    m, s = stored["manifest"], stored["summary"]
    st = s.get("statistics", {})
    lines += [
        f"  manifest: created {m.get('created')}, status {m.get('status')}, files: "
        + ", ".join(f"{n} ({meta.get('size')} B)" for n, meta in m.get("files", {}).items()),
        f"  status: {s.get('status')} -- {s.get('message')}",
        f"  strategy: {s.get('strategy')} -- {s.get('strategy_reason')}",
        f"  n_points={st.get('n_points')} chi2={st.get('chi2')} redchi={st.get('redchi')} r2={st.get('r2')}",
        "  parameters:",
    ]
    for name, p in (s.get("params") or {}).items():
        lines.append(f"    {name:<12} {p.get('value')} +/- {p.get('stderr')}")
    for w in s.get("warnings") or []:
        lines.append(f"  warning: {w}")
    extras = sorted(stored.get("extras", {}))
    if extras:
        lines.append("  extra files: " + ", ".join(extras))
    return lines
