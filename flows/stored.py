"""The human description ``nlsq-flow inspect`` prints for a result or checkpoint location.

Tasks hand each other URIs, not results: the validation task reads the
:class:`~nlsq_tasks.FitResult` it checks with ``nlsq_tasks.io.read_result`` (which refuses
a directory whose manifest does not match, and returns the result that was written).
"""

from __future__ import annotations

import json
from typing import Optional



# -- nlsq-flow inspect ------------------------------------------------------------------------
def describe_location(uri: str, storage_options: Optional[dict] = None) -> str:
    """A result directory (or a storage_uri holding ``results/``), or a checkpoint directory."""
    from nlsq_tasks.io import CheckpointStore, read_result_files, resolve

    from .resolve import CHECKPOINTS_DIR, RESULTS_DIR, join

    fs, path = resolve(uri, storage_options)
    lines: list[str] = []
    # a run directory, a storage_uri (its newest run under runs/), or a runs/ directory
    candidates = [uri, join(uri, RESULTS_DIR)] + _newest_runs(fs, path) + _newest_runs(fs, path.rstrip("/") + "/runs")
    for cand in candidates:
        _, cpath = resolve(cand, storage_options)
        if fs.exists(cpath.rstrip("/") + "/manifest.json") or fs.exists(cpath.rstrip("/") + "/summary.json"):
            lines += _describe_result(cand, storage_options, read_result_files)
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


def _describe_result(uri: str, storage_options, read_result_files) -> list[str]:
    lines = [f"result at {uri}"]
    try:
        stored = read_result_files(uri, storage_options)
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
