"""A PNG of data, fit and residuals, rendered in memory and written to storage atomically.

The data may be far larger than a plot can show: the caller passes a reproducible sample
(at most :data:`MAX_PLOT_POINTS` points). matplotlib is optional; without it
:func:`render_fit_png` returns None and the flow says the plot was skipped.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np

MAX_PLOT_POINTS = 5000


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def render_fit_png(x: np.ndarray, y: np.ndarray, y_fit: np.ndarray, title: str,
                   curve: Optional[tuple[np.ndarray, np.ndarray]] = None, dpi: int = 100) -> Optional[bytes]:
    """PNG bytes of two panels (data with fit; residuals), or None when matplotlib is missing.

    ``curve`` = (x_grid, f(x_grid)) draws the fit as a smooth line; without it the fit is
    drawn through the sampled points.
    """
    if not matplotlib_available():
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display on workers
    from matplotlib.figure import Figure

    x, y, y_fit = (np.asarray(a, dtype=float) for a in (x, y, y_fit))
    if x.ndim > 1:  # several features: plot against the first one
        x = x[0]
    order = np.argsort(x, kind="stable")
    x, y, y_fit = x[order], y[order], y_fit[order]
    # Figure() rather than pyplot: no global state, safe in threads of a task runner.
    fig = Figure(figsize=(7, 5), dpi=dpi)
    ax, ax_res = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(x, y, ".", ms=2, alpha=0.5, label=f"data ({x.size} shown)")
    cx, cy = (x, y_fit) if curve is None else (np.asarray(curve[0], float), np.asarray(curve[1], float))
    ax.plot(cx, cy, "-", lw=1.5, color="C3", label="fit")
    ax.set_title(title)
    ax.legend(loc="best")
    ax_res.plot(x, y - y_fit, ".", ms=2, alpha=0.5)
    ax_res.axhline(0.0, color="k", lw=0.8)
    ax_res.set_xlabel("x")
    ax_res.set_ylabel("residual")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
