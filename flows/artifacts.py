"""Prefect artifacts of a fit: the report with its plot, the parameter table, the plot alone.

Everything here is built from the *summary dict* a fit task returns (``FitResult.summary()``
plus the storage URIs) and a small base64 PNG, never from arrays, so it can run in any task
of the flow.

The plot is embedded in the markdown (``![...](data:image/png;base64,...)``): a browser
refuses to open a worker's ``file://`` path from the UI, and an ``s3://`` URL is no link at
all, so a link artifact would show nothing. The embedded copy is capped at
:data:`MAX_EMBEDDED_PNG_BYTES` (re-drawn at a lower resolution if needed, left out with a
note if still too big); the full-size PNG is in the results location.

Artifact keys are ``nlsq-<kind>-<scope>`` where the scope names the deployment (``local``
for a run without one) and the data set: the Artifacts page then shows one versioned
series per deployment and data set instead of one "latest" report for everything.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any, Callable, Optional

REPORT_KIND = "report"
PARAMS_KIND = "params"
PLOT_KIND = "plot"
BATCH_KIND = "batch"
PROGRESS_KIND = "progress"
MAX_EMBEDDED_PNG_BYTES = 150_000  # ~200 KB of base64 in the artifact: a plot, not a photo
_KEY_MAX = 100


def artifact_key(kind: str, scope: str = "local") -> str:
    """``nlsq-<kind>-<scope>`` in the alphabet Prefect accepts (lowercase, digits, dashes)."""
    text = re.sub(r"[^a-z0-9-]+", "-", f"nlsq-{kind}-{scope}".lower())
    return re.sub(r"-+", "-", text).strip("-")[:_KEY_MAX].rstrip("-")


def embeddable_png(png: Optional[bytes], render: Optional[Callable[[int], bytes]] = None) -> Optional[str]:
    """The PNG as base64 when it fits the cap, re-drawn by ``render(dpi)`` at lower
    resolutions if it does not; None when even the smallest is too big (or no PNG)."""
    if not png:
        return None
    for dpi in (None, 72, 50):
        if dpi is not None:
            if render is None:
                break
            png = render(dpi)
        if png and len(png) <= MAX_EMBEDDED_PNG_BYTES:
            return base64.b64encode(png).decode("ascii")
    return None


def plot_markdown(png_base64: Optional[str], caption: str = "Data, fit and residuals") -> str:
    """Markdown that shows the plot inline, or says where it is when it could not be embedded."""
    if not png_base64:
        return f"*{caption}: the plot is too large to show here; see the results location.*"
    return f"![{caption}](data:image/png;base64,{png_base64})"


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


def report_markdown(summary: dict, plan: dict, uris: dict, validation: Optional[dict], notes: list[str],
                    plot_base64: Optional[str] = None) -> str:
    """The fit report: statistics, strategy and why, budget, timings, warnings, validation."""
    st = summary.get("statistics", {})
    lines = [
        f"# Fit report: {summary.get('status')} ({'converged' if summary.get('success') else 'not converged'})",
        "",
        f"> {summary.get('message', '')}",
        "",
    ]
    if plot_base64 is not None:
        lines += [plot_markdown(plot_base64), ""]
    lines += [
        "## Strategy",
        f"- **strategy**: `{summary.get('strategy') or plan.get('strategy')}`",
        f"- **why**: {plan.get('reason') or summary.get('strategy_reason', '')}",
        f"- **preset**: `{plan.get('workflow') or plan.get('preset_name', '')}`, goal: `{plan.get('goal') or summary.get('goal')}`",
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


def publish_fit_artifacts(summary: dict, plan: dict, uris: dict, validation: Optional[dict],
                          plot: dict, notes: list[str], scope: str = "local") -> dict[str, str]:
    """Create the report (with the plot), the parameter table and the plot; return their ids."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    png = plot.get("png_base64")
    has_plot = bool(plot.get("uri"))
    ids = {}
    ids["report"] = create_markdown_artifact(
        markdown=report_markdown(summary, plan, uris, validation, notes, png if has_plot else None),
        key=artifact_key(REPORT_KIND, scope), description=f"Fit report: {scope}",
    )
    ids["params"] = create_table_artifact(
        table=parameter_rows(summary), key=artifact_key(PARAMS_KIND, scope),
        description=f"Fitted parameters with errors and bounds: {scope}",
    )
    if has_plot:
        ids["plot"] = create_markdown_artifact(
            markdown=plot_markdown(png) + f"\n\nFull size: `{plot['uri']}`",
            key=artifact_key(PLOT_KIND, scope), description=f"Data, fit and residuals: {scope}",
        )
    return {k: str(v) for k, v in ids.items()}

