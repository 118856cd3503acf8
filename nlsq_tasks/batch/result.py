"""``BatchFitResult``: K fits of one model, as arrays, a table and per-fit ``FitResult``.

Everything is held as stacked arrays (``popt (K, P)``, ``pcov (K, P, P)``, ``status (K,)``,
...), so a million fits cost a few arrays, not a million objects. ``result[i]`` builds the
:class:`~nlsq_tasks.FitResult` of fit ``i`` on demand (the same type a single fit returns);
:meth:`BatchFitResult.to_table` gives one row per fit, columns by parameter name:

``dataset, status, status_code, success, message, error, n_points, n_omitted, nfev, nit,
cost, chi2, redchi, r2, rmse, aic, bic, <p>, <p>_stderr (for every parameter), warnings``.

:meth:`~BatchFitResult.to_arrow` makes a ``pyarrow.Table`` of it (the ``parquet`` extra);
writing Parquet or CSV to storage is :func:`nlsq_tasks.io.write_table` (the library does no
I/O outside ``nlsq_tasks.io``).

Covariance, per fit exactly as :mod:`~nlsq_tasks.engine.covariance` builds it for a
single fit (equilibrated :math:`J^T J`, eigen-decomposition, SciPy's singular-value
cut-off, scaled by :math:`2F/(n-p)` unless ``absolute_sigma``), but for all fits at once
with stacked LAPACK calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..engine.covariance import NULL_WEIGHT
from ..engine.finalize import undetermined_note
from ..engine.result import FitResult, FitStatistics
from ..engine.status import FitStatus

EPS = np.finfo(np.float64).eps


def batched_covariance(r: np.ndarray, cost: np.ndarray, n_points: np.ndarray, absolute_sigma: bool):
    """``(pcov (K, P, P), undetermined (K, P) bool, condition (K,))`` of every fit, from the
    loop's factors ``r`` (``(K, P, P)``, :math:`R^T R = J^T J`), exactly as
    :func:`~nlsq_tasks.engine.covariance.covariance` builds them for one fit (the same
    equilibrated SVD, cut-off and :data:`~nlsq_tasks.engine.covariance.NULL_WEIGHT` rule),
    one stacked LAPACK call for all fits: a parameter in a dropped singular direction is
    undetermined, and its row and column of ``pcov`` are inf."""
    r = np.asarray(r, np.float64)
    k, p, _ = r.shape
    finite = np.all(np.isfinite(r), axis=(1, 2))
    safe = np.where(finite[:, None, None], r, np.eye(p))
    col = np.sqrt(np.sum(safe * safe, axis=1))
    s = np.where(col > 0, 1.0 / np.where(col > 0, col, 1.0), 1.0)
    _, sv, vt = np.linalg.svd(safe * s[:, None, :])
    top = sv[:, :1]
    n = np.maximum(np.asarray(n_points, np.float64), p)
    keep = (sv > EPS * n[:, None] * top) & (top > 0)
    w = np.where(keep, 1.0 / np.where(keep, sv, 1.0) ** 2, 0.0)
    pcov = np.einsum("kji,kj,kjl->kil", vt, w, vt) * s[:, :, None] * s[:, None, :]
    undetermined = np.any((~keep)[:, :, None] & (np.abs(vt) > NULL_WEIGHT), axis=1) & finite[:, None]
    with np.errstate(divide="ignore"):
        condition = np.where(sv[:, -1] > 0, sv[:, 0] / np.where(sv[:, -1] > 0, sv[:, -1], 1.0), np.inf)
    bad = ~finite | np.isnan(pcov).any(axis=(1, 2))
    if not absolute_sigma:
        n = np.asarray(n_points, np.float64)
        dof_ok = n > p
        factor = np.where(dof_ok, 2.0 * np.asarray(cost) / np.where(dof_ok, n - p, 1.0), np.inf)
        with np.errstate(invalid="ignore"):
            pcov = pcov * factor[:, None, None]
        pcov = np.where(dof_ok[:, None, None], pcov, np.inf)
    pcov = np.where(undetermined[:, :, None] | undetermined[:, None, :], np.inf, pcov)
    return np.where(bad[:, None, None], np.inf, pcov), undetermined, condition


@dataclass
class BatchFitResult:
    """K fits of one model. Arrays have the fits on their first axis."""

    param_names: list[str]
    popt: np.ndarray  # (K, P)
    pcov: np.ndarray  # (K, P, P)
    status: np.ndarray  # (K,) FitStatus codes
    nfev: np.ndarray
    njev: np.ndarray
    nit: np.ndarray
    cost: np.ndarray
    chi2: np.ndarray
    ssr: np.ndarray
    sst: np.ndarray
    n_points: np.ndarray
    grad_norm: np.ndarray
    lower: np.ndarray  # (K, P)
    upper: np.ndarray  # (K, P)
    n_omitted: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)  # fits not started (status INVALID_INPUT), and why
    labels: list[str] | None = None  # names of the data sets (file names), for the table
    loss: str = "linear"
    tolerances: np.ndarray | None = None  # (K, 3): ftol, xtol, gtol of every fit
    timings: dict[str, float] = field(default_factory=dict)
    blocks: dict[str, Any] = field(default_factory=dict)  # how the batch was split (block size, devices)
    notes: list[str] = field(default_factory=list)
    undetermined: np.ndarray | None = None  # (K, P): parameters the data of fit i do not determine (inf variance)
    condition: np.ndarray | None = None  # (K,): condition number of each fit's column-equilibrated J

    def undetermined_names(self, i: int) -> list[str]:
        """The parameters fit ``i``'s data do not determine (their variances are inf)."""
        if self.undetermined is None:
            return []
        return [n for n, u in zip(self.param_names, self.undetermined[int(i)]) if u]

    def _undetermined_note(self, i: int) -> str | None:
        names = self.undetermined_names(i)
        if not names or i in self.errors:
            return None
        return undetermined_note(names, float(self.condition[i]) if self.condition is not None else float("inf"))

    @classmethod
    def failed(cls, labels: Sequence[str], errors: Sequence[str], param_names: Sequence[str], loss: str = "linear") -> "BatchFitResult":
        """Fits that never started (unreadable data...): status INVALID_INPUT, the error in
        their rows; the table has the same columns as any other batch's."""
        k, p = len(labels), len(param_names)
        nan = np.full(k, np.nan)
        zeros = np.zeros(k, np.int64)
        return cls(
            param_names=list(param_names), popt=np.full((k, p), np.nan), pcov=np.full((k, p, p), np.nan),
            status=np.full(k, int(FitStatus.INVALID_INPUT), np.int64), nfev=zeros, njev=zeros, nit=zeros,
            cost=nan, chi2=nan, ssr=nan, sst=nan, n_points=zeros, grad_norm=nan,
            lower=np.full((k, p), -np.inf), upper=np.full((k, p), np.inf), n_omitted=zeros,
            errors={i: str(e) for i, e in enumerate(errors)}, labels=[str(v) for v in labels], loss=loss,
        )

    def __len__(self) -> int:
        return int(self.popt.shape[0])

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @property
    def perr(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diagonal(self.pcov, axis1=1, axis2=2))

    @property
    def success(self) -> np.ndarray:
        return np.isin(self.status, [int(s) for s in FitStatus if s.converged])

    @property
    def n_failed(self) -> int:
        return int(len(self) - self.success.sum())

    @property
    def dof(self) -> np.ndarray:
        return np.maximum(self.n_points - self.n_params, 0)

    @property
    def redchi(self) -> np.ndarray:
        dof = self.dof
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(dof > 0, self.chi2 / np.where(dof > 0, dof, 1), np.inf)

    @property
    def r2(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.sst > 0, 1.0 - self.ssr / np.where(self.sst > 0, self.sst, 1.0), np.nan)

    @property
    def rmse(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.n_points > 0, np.sqrt(self.ssr / np.maximum(self.n_points, 1)), np.nan)

    def _loglike(self) -> np.ndarray:
        n = np.maximum(self.n_points, 1)
        return n * np.log(np.maximum(self.chi2, 1e-300) / n)

    @property
    def aic(self) -> np.ndarray:
        return self._loglike() + 2 * self.n_params

    @property
    def bic(self) -> np.ndarray:
        return self._loglike() + np.log(np.maximum(self.n_points, 1)) * self.n_params

    def message(self, i: int) -> str:
        if i in self.errors:
            return self.errors[i]
        return FitStatus(int(self.status[i])).message

    def warnings(self, i: int) -> list[str]:
        return [] if i in self.errors else self[i].warnings

    def __getitem__(self, i: int) -> FitResult:
        """Fit ``i`` as a :class:`FitResult` (what the same fit done alone returns)."""
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"fit index {i} out of range for a batch of {len(self)}")
        i %= len(self)
        stats = FitStatistics(int(self.n_points[i]), self.n_params, float(self.chi2[i]), float(self.ssr[i]), float(self.sst[i]))
        tol = {} if self.tolerances is None else dict(zip(("ftol", "xtol", "gtol"), map(float, self.tolerances[i])))
        res = FitResult(
            popt=self.popt[i].copy(), pcov=self.pcov[i].copy(), status=FitStatus(int(self.status[i])),
            nfev=int(self.nfev[i]), njev=int(self.njev[i]), nit=int(self.nit[i]), cost=float(self.cost[i]),
            stats=stats, param_names=list(self.param_names), lower=self.lower[i].copy(), upper=self.upper[i].copy(),
            grad_norm=float(self.grad_norm[i]), strategy="batch",
            strategy_reason=f"fit {i} of a batch of {len(self)} (one compiled vmap over data sets)",
            tolerances=tol, loss=self.loss,
        )
        note = self._undetermined_note(i)
        if note:  # as a single fit's result says it
            res.extra_warnings.append(note)
        if self.n_omitted[i]:
            res.extra_warnings.append(f"nan_policy='omit' dropped {int(self.n_omitted[i])} point(s) with NaN or inf.")
        if i in self.errors:
            res.extra_warnings.append(self.errors[i])
        return res

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # -- the table ------------------------------------------------------------------
    def _warning_column(self) -> list[str]:
        """Per fit, the warnings a FitResult would give, joined (vectorised: no K objects)."""
        out = [[] for _ in range(len(self))]
        for i in np.flatnonzero(~self.success):
            out[i].append("Not converged: " + self.message(int(i)))
        span = np.where(np.isfinite(self.upper - self.lower), self.upper - self.lower, 1.0)
        tol = 1e-10 * np.maximum(1.0, np.abs(span))
        at_lo = np.isfinite(self.lower) & (self.popt - self.lower <= tol)
        at_hi = np.isfinite(self.upper) & (self.upper - self.popt <= tol)
        for i, j in zip(*np.nonzero(at_lo | at_hi)):
            side = "lower" if at_lo[i, j] else "upper"
            out[i].append(f"Parameter '{self.param_names[j]}' is at its {side} bound; its error is not meaningful.")
        for i in np.flatnonzero(~np.all(np.isfinite(self.pcov), axis=(1, 2))):
            if int(i) not in self.errors:
                out[i].append("The covariance is singular; pcov holds inf.")
        if self.undetermined is not None:
            for i in np.flatnonzero(self.undetermined.any(axis=1)):
                note = self._undetermined_note(int(i))
                if note:
                    out[i].append(note)
        for i in np.flatnonzero(self.n_omitted):
            out[i].append(f"nan_policy='omit' dropped {int(self.n_omitted[i])} point(s) with NaN or inf.")
        return ["; ".join(w) for w in out]

    def to_table(self) -> dict[str, list | np.ndarray]:
        """One row per fit, as ``{column: values}`` (see the module docstring for the columns)."""
        k = len(self)
        labels = self.labels if self.labels is not None else [str(i) for i in range(k)]
        status = [FitStatus(int(s)).name for s in self.status]
        cols: dict[str, Any] = {
            "dataset": list(labels),
            "status": status,
            "status_code": self.status.astype(np.int64),
            "success": self.success,
            "message": [self.message(i) for i in range(k)],
            "error": [self.errors.get(i, "") for i in range(k)],
            "n_points": self.n_points.astype(np.int64),
            "n_omitted": self.n_omitted.astype(np.int64),
            "nfev": self.nfev.astype(np.int64),
            "nit": self.nit.astype(np.int64),
            "cost": self.cost,
            "chi2": self.chi2,
            "redchi": self.redchi,
            "r2": self.r2,
            "rmse": self.rmse,
            "aic": self.aic,
            "bic": self.bic,
        }
        perr = self.perr
        for j, name in enumerate(self.param_names):
            cols[name] = self.popt[:, j]
            cols[f"{name}_stderr"] = perr[:, j]
        cols["warnings"] = self._warning_column()
        bad = list(self.errors)
        if bad:  # a fit that never started has no numbers
            for name in ["cost", "chi2", "redchi", "r2", "rmse", "aic", "bic"] + [c for n in self.param_names for c in (n, f"{n}_stderr")]:
                col = np.array(cols[name], dtype=np.float64)
                col[bad] = np.nan
                cols[name] = col
        return cols

    def to_arrow(self):
        """The table as a ``pyarrow.Table`` (needs the ``parquet`` extra)."""
        try:
            import pyarrow as pa
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("BatchFitResult.to_arrow needs pyarrow: pip install 'nlsq-flows[parquet]'") from exc
        return pa.table({k: (np.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in self.to_table().items()})

    def summary(self) -> dict[str, Any]:
        """Counts and timings (small; the per-fit numbers are in the table)."""
        counts: dict[str, int] = {}
        for s in self.to_table()["status"]:
            counts[s] = counts.get(s, 0) + 1
        return {
            "n_fits": len(self), "n_ok": len(self) - self.n_failed, "n_failed": self.n_failed,
            "status_counts": counts, "param_names": list(self.param_names), "loss": self.loss,
            "timings": dict(self.timings), "blocks": dict(self.blocks), "notes": list(self.notes),
        }

    def report(self, max_rows: int = 10) -> str:
        s = self.summary()
        lines = ["[[Batch Fit]]", f"    fits: {s['n_fits']}   converged: {s['n_ok']}   not converged or invalid: {s['n_failed']}",
                 "    status: " + ", ".join(f"{k}={v}" for k, v in sorted(s["status_counts"].items()))]
        if self.timings:
            lines.append("    timings: " + ", ".join(f"{k}={v:.3f}s" for k, v in self.timings.items()))
        lines.append("[[Parameters]] (median and 16-84% range over converged fits)")
        ok = self.success
        for j, name in enumerate(self.param_names):
            v = self.popt[ok, j]
            if v.size:
                q = np.percentile(v, [16, 50, 84])
                lines.append(f"    {name}: {q[1]:.6g}  [{q[0]:.6g}, {q[2]:.6g}]")
        bad = [int(i) for i in np.flatnonzero(~ok)][:max_rows]
        if bad:
            lines.append("[[Failed fits]]" + (f" (first {max_rows})" if len(bad) == max_rows else ""))
            labels = self.labels or [str(i) for i in range(len(self))]
            lines += [f"    {labels[i]}: {self.message(i)}" for i in bad]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()



def concat_tables(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Row-wise concatenation of tables with the same columns (as :meth:`BatchFitResult.to_table`)."""
    tables = [t for t in tables if t]
    if not tables:
        return {}
    names = list(tables[0])
    for t in tables[1:]:
        if list(t) != names:
            raise ValueError(f"tables have different columns: {names} and {list(t)}")
    out: dict[str, Any] = {}
    for n in names:
        parts = [t[n] for t in tables]
        if all(isinstance(v, np.ndarray) and v.dtype != object for v in parts):
            out[n] = np.concatenate(parts)
        else:
            out[n] = [item for v in parts for item in (v.tolist() if isinstance(v, np.ndarray) else v)]
    return out
