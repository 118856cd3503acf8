"""Prefect artifacts of a fit: parameter table, markdown report, links to stored results.

Everything here is built from the *summary dict* a fit task returns (``FitResult.summary()``
plus the storage URIs), never from arrays, so it can run in any task of the flow.
Artifact keys are fixed (lowercase and dashes, as Prefect requires) so the UI's
Artifacts page shows each kind as one versioned series.
"""

from __future__ import annotations

import math
from typing import Any, Optional

PARAMS_KEY = "nlsq-fit-params"
REPORT_KEY = "nlsq-fit-report"
RESULTS_LINK_KEY = "nlsq-fit-results"
PLOT_LINK_KEY = "nlsq-fit-plot"
BATCH_KEY = "nlsq-batch-summary"


def _num(v: Any) -> Optional[float]:
    try:
        f = float(v)  # summary() writes inf/nan as strings; float() reads them back
    except (TypeError, ValueError):
        return None
    return f


def _fmt(v: Any, spec: str = ".6g") -> str:
    f = _num(v)
    if f is None:
        return "" if v is None else str(v)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return format(f, spec)


def parameter_rows(summary: dict) -> list[dict[str, Any]]:
    """One row per parameter: value, error, relative error in %, bounds, at-bound flag."""
    rows = []
    active = summary.get("active_bounds") or []
    for i, (name, p) in enumerate((summary.get("params") or {}).items()):
        value, err = _num(p.get("value")), _num(p.get("stderr"))
        rel = abs(err / value) * 100 if value and err is not None and math.isfinite(err) else None
        flag = active[i] if i < len(active) else 0
        rows.append(
            {
                "parameter": name,
                "value": _fmt(value, ".10g"),
                "error": _fmt(err, ".4g") if err is not None and math.isfinite(err) else "not determined",
                "relative %": _fmt(rel, ".3g") if rel is not None else "",
                "lower": _fmt(p.get("lower")),
                "upper": _fmt(p.get("upper")),
                "at bound": {-1: "lower", 1: "upper"}.get(flag, ""),
            }
        )
    return rows


def report_markdown(summary: dict, plan: dict, uris: dict, validation: Optional[dict], notes: list[str]) -> str:
    """The fit report: statistics, strategy and why, budget, timings, warnings, validation."""
    st = summary.get("statistics", {})
    lines = [
        f"# Fit report: {summary.get('status')} ({'converged' if summary.get('success') else 'not converged'})",
        "",
        f"> {summary.get('message', '')}",
        "",
        "## Strategy",
        f"- **strategy**: `{summary.get('strategy') or plan.get('strategy')}`",
        f"- **why**: {plan.get('reason') or summary.get('strategy_reason', '')}",
        f"- **preset**: `{plan.get('preset_name', '')}`, goal: `{plan.get('goal') or summary.get('goal')}`",
    ]
    budget = plan.get("budget") or summary.get("budget") or {}
    if budget:
        lines.append(
            "- **memory budget**: "
            + ", ".join(f"{k}={_fmt(v, '.3g')}" if _num(v) is not None and not isinstance(v, bool) else f"{k}={v}"
                        for k, v in budget.items())
        )
    lines += ["", "## Statistics", "| quantity | value |", "|---|---|"]
    for k in ("n_points", "n_params", "dof", "chi2", "redchi", "r2", "rmse", "aic", "bic", "cost", "grad_norm"):
        if k in st:
            lines.append(f"| {k} | {_fmt(st[k])} |")
    lines += [f"| nfev | {summary.get('nfev')} |", f"| nit | {summary.get('nit')} |"]
    lines += ["", "## Parameters", "| parameter | value | error | relative % | lower | upper |", "|---|---|---|---|---|---|"]
    for r in parameter_rows(summary):
        lines.append(
            f"| {r['parameter']} | {r['value']} | {r['error']} | {r['relative %']} | {r['lower']} | {r['upper']} |"
        )
    timings = dict(summary.get("timings") or {})
    timings.update({f"task:{k}": v for k, v in (plan.get("task_timings") or {}).items()})
    if timings:
        lines += ["", "## Timings", ", ".join(f"{k}={_fmt(v, '.3f')}s" for k, v in timings.items())]
    tol = summary.get("tolerances") or {}
    if tol:
        lines += ["", "## Tolerances", ", ".join(f"{k}={_fmt(v, '.0e')}" for k, v in tol.items())]
    if validation is not None:
        lines += ["", "## Validation", f"**{'passed' if validation.get('passed') else 'FAILED'}**", ""]
        for c in validation.get("checks", []):
            mark = "ok" if c.get("passed") else "FAIL"
            lines.append(f"- {mark} `{c.get('name')}`: {_fmt(c.get('value'))} (threshold {c.get('threshold')}) {c.get('detail', '')}")
    warns = list(summary.get("warnings") or []) + list(notes)
    if warns:
        lines += ["", "## Warnings and notes"] + [f"- {w}" for w in warns]
    if uris:
        lines += ["", "## Stored results"] + [f"- {k}: `{v}`" for k, v in uris.items()]
    return "\n".join(lines)


def as_link(uri: str) -> str:
    """A clickable form of a storage URI (local paths become file:// URLs)."""
    if "://" in uri:
        return uri
    from pathlib import Path

    return Path(uri).resolve().as_uri()


def publish_fit_artifacts(summary: dict, plan: dict, uris: dict, validation: Optional[dict],
                          plot: dict, notes: list[str]) -> dict[str, str]:
    """Create the table, markdown and link artifacts; return their ids as strings."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    ids = {}
    ids["params"] = create_table_artifact(
        table=parameter_rows(summary), key=PARAMS_KEY, description="Fitted parameters with errors and bounds"
    )
    ids["report"] = create_markdown_artifact(
        markdown=report_markdown(summary, plan, uris, validation, notes), key=REPORT_KEY,
        description="NLSQ fit report",
    )
    results_dir = uris.get("results_dir")
    if results_dir:
        ids["results"] = create_link_artifact(
            link=as_link(results_dir), link_text=results_dir, key=RESULTS_LINK_KEY,
            description="Stored results (summary.json, params.npz, report.txt)",
        )
    if plot.get("uri"):
        ids["plot"] = create_link_artifact(
            link=as_link(plot["uri"]), link_text=plot["uri"], key=PLOT_LINK_KEY,
            description="Data, fit and residuals (PNG)",
        )
    return {k: str(v) for k, v in ids.items()}


def batch_rows(outcomes: list[dict]) -> list[dict[str, Any]]:
    """One row per data set of a batch: status, a headline statistic, where, or why it failed."""
    rows = []
    for o in outcomes:
        s = o.get("summary") or {}
        st = s.get("statistics") or {}
        rows.append(
            {
                "data": o.get("uri"),
                "state": "ok" if o.get("ok") else "failed",
                "status": s.get("status", ""),
                "strategy": s.get("strategy", ""),
                "redchi": _fmt(st.get("redchi")) if st else "",
                "r2": _fmt(st.get("r2")) if st else "",
                "params": ", ".join(f"{k}={_fmt(v.get('value'))}" for k, v in (s.get("params") or {}).items()),
                "results": (o.get("uris") or {}).get("results_dir", ""),
                "error": o.get("error", ""),
            }
        )
    return rows


def publish_batch_artifact(outcomes: list[dict]) -> str:
    from prefect.artifacts import create_table_artifact

    n_ok = sum(1 for o in outcomes if o.get("ok"))
    return str(
        create_table_artifact(
            table=batch_rows(outcomes), key=BATCH_KEY,
            description=f"Batch fit: {n_ok} of {len(outcomes)} data sets fitted",
        )
    )
