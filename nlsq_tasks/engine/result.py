"""``FitResult``: the one result type every strategy returns.

Statistics (for ``n`` points, ``p`` free parameters, weighted residuals ``r_i``):

.. math::

    \\chi^2 = \\sum_i r_i^2,\\qquad \\chi^2_\\nu = \\chi^2 / (n - p),\\qquad
    R^2 = 1 - \\frac{\\sum_i (y_i - f_i)^2}{\\sum_i (y_i - \\bar y)^2},\\qquad
    \\mathrm{RMSE} = \\sqrt{\\tfrac{1}{n}\\sum_i (y_i - f_i)^2}

    \\mathrm{AIC} = n \\ln(\\chi^2 / n) + 2p,\\qquad \\mathrm{BIC} = n \\ln(\\chi^2 / n) + p \\ln n

(the lmfit convention). Iterating a result yields ``(popt, pcov)`` so that
``popt, pcov = fit(...)`` works as with SciPy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .status import FitStatus


@dataclass
class FitStatistics:
    """Goodness-of-fit numbers, computed once at the solution over all the data."""

    n_points: int
    n_params: int
    chi2: float
    ssr: float  # unweighted sum of squared residuals
    sst: float  # total sum of squares of y about its mean

    @property
    def dof(self) -> int:
        return max(self.n_points - self.n_params, 0)

    @property
    def redchi(self) -> float:
        return self.chi2 / self.dof if self.dof > 0 else math.inf

    @property
    def r2(self) -> float:
        return 1.0 - self.ssr / self.sst if self.sst > 0 else math.nan

    @property
    def rmse(self) -> float:
        return math.sqrt(self.ssr / self.n_points) if self.n_points else math.nan

    def _loglike_term(self) -> float:
        return self.n_points * math.log(max(self.chi2, 1e-300) / self.n_points)

    @property
    def aic(self) -> float:
        return self._loglike_term() + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self._loglike_term() + math.log(self.n_points) * self.n_params


@dataclass
class FitResult:
    """The outcome of a fit, whatever strategy produced it.

    Core fields mirror SciPy (``popt``, ``pcov``, ``nfev``...). Context fields record every
    choice the run made: strategy and why, the memory budget, tolerances, timings, starts.
    """

    popt: np.ndarray
    pcov: np.ndarray
    status: FitStatus
    nfev: int
    njev: int
    nit: int
    cost: float
    stats: FitStatistics
    param_names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    grad_norm: float = math.nan
    strategy: str = "standard"
    strategy_reason: str = ""
    budget: dict[str, Any] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    loss: str = "linear"
    workflow: str | None = None
    goal: str | None = None
    starts: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    validation: Any = None  # ValidationReport once the QUALITY pass ran
    # Where the passes ran: backend, device kind, device and process counts, rows per
    # device, sharded or not and why (see nlsq_tasks.engine.sharded.Execution).
    execution: dict[str, Any] = field(default_factory=dict)
    extra_warnings: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)  # parameters held at their value (not fitted)
    plan: dict[str, Any] | None = None  # the FitPlan that ran, as a dict (provenance)
    # The data fitted, kept by reference (fit(): the arrays; fit_source(): the source's URI
    # when it has one). Plain attributes, not fields: not part of summary() or equality.
    xdata = None
    ydata = None
    data_uri = None

    # -- provenance, equality and the round trip through summary() -------------------
    def with_provenance(self, plan, *, timings: dict[str, float] | None = None, notes=()) -> "FitResult":
        """This result with the plan that produced it recorded (strategy and why, budget,
        workflow, goal, tolerances, loss): a new FitResult, built once by the front door."""
        d = plan.to_dict() if hasattr(plan, "to_dict") else dict(plan)
        # a shallow copy with these fields set: what dataclasses.replace gives (no field has
        # an init-time rule), without re-running __init__ for every field of a small fit
        out = object.__new__(type(self))  # copy.copy of a plain dataclass, without its pickle protocol
        out.__dict__.update(self.__dict__)
        out.strategy = d["strategy"]
        out.strategy_reason = d["reason"]
        out.budget = dict(d.get("budget") or {})
        out.workflow = d.get("workflow")
        out.goal = d.get("goal")
        out.tolerances = {k: float(v) for k, v in (d.get("tolerances") or {}).items()}
        out.loss = d.get("loss", self.loss)
        out.timings = dict(self.timings if timings is None else timings)
        out.extra_warnings = list(self.extra_warnings) + list(notes)
        # where the passes ran: the executor's own record, else the plan's devices
        out.execution = dict(self.execution) or {k: v for k, v in (d.get("devices") or {}).items() if k != "cluster"}
        out.plan = d
        out.xdata, out.ydata, out.data_uri = self.xdata, self.ydata, self.data_uri
        return out

    def __eq__(self, other: object) -> bool:
        """Field by field; arrays and floats compare with NaN equal to NaN."""
        if not isinstance(other, FitResult):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    __hash__ = None  # mutable, compared by value

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> "FitResult":
        """The FitResult whose :meth:`summary` this is: ``FitResult.from_summary(r.summary()) == r``."""
        s = summary
        st = s["statistics"]
        names = [str(n) for n in (s.get("param_names") or list(s["params"]))]
        params = s["params"]
        validation = None
        if s.get("validation") is not None:
            from .validation import ValidationReport

            validation = ValidationReport.from_dict(s["validation"])
        return cls(
            popt=np.asarray(s["popt"], dtype=np.float64),
            pcov=np.asarray(s["pcov"], dtype=np.float64).reshape(len(names), len(names)),
            status=FitStatus[s["status"]],
            nfev=int(s["nfev"]), njev=int(s["njev"]), nit=int(s["nit"]),
            cost=_number(st["cost"]),
            stats=FitStatistics(n_points=int(st["n_points"]), n_params=int(st["n_params"]), chi2=_number(st["chi2"]),
                                ssr=_number(st["ssr"]), sst=_number(st["sst"])),
            param_names=names,
            lower=np.asarray([_number(params[n]["lower"]) for n in names], dtype=np.float64),
            upper=np.asarray([_number(params[n]["upper"]) for n in names], dtype=np.float64),
            grad_norm=_number(st["grad_norm"]),
            strategy=s["strategy"],
            strategy_reason=s["strategy_reason"],
            budget=restore_numbers(s.get("budget") or {}),
            tolerances=restore_numbers(s.get("tolerances") or {}),
            timings=restore_numbers(s.get("timings") or {}),
            loss=s.get("loss") or "linear",
            workflow=s.get("workflow"),
            goal=s.get("goal"),
            starts=restore_numbers(s.get("starts") or []),
            checkpoints=restore_numbers(s.get("checkpoints") or {}),
            validation=validation,
            execution=restore_numbers(s.get("execution") or {}),
            extra_warnings=list(s.get("notes") or []),
            fixed=list(s.get("fixed") or []),
            plan=restore_numbers(s["plan"]) if s.get("plan") is not None else None,
        )

    # -- SciPy-like views -------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.popt
        yield self.pcov

    @property
    def perr(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diag(self.pcov))

    @property
    def success(self) -> bool:
        return self.status.converged

    @property
    def message(self) -> str:
        return self.status.message

    # statistics, flat, as users reach for them
    chi2 = property(lambda self: self.stats.chi2)
    redchi = property(lambda self: self.stats.redchi)
    r2 = property(lambda self: self.stats.r2)
    rmse = property(lambda self: self.stats.rmse)
    aic = property(lambda self: self.stats.aic)
    bic = property(lambda self: self.stats.bic)
    n_points = property(lambda self: self.stats.n_points)
    n_params = property(lambda self: self.stats.n_params)

    @property
    def active_bounds(self) -> np.ndarray:
        """-1 at the lower bound, +1 at the upper bound, 0 inside (SciPy's active_mask)."""
        span = np.where(np.isfinite(self.upper - self.lower), self.upper - self.lower, 1.0)
        tol = 1e-10 * np.maximum(1.0, np.abs(span))
        free = np.array([n not in self.fixed for n in self.param_names], dtype=bool)
        at_lo = free & np.isfinite(self.lower) & (self.popt - self.lower <= tol)
        at_hi = free & np.isfinite(self.upper) & (self.upper - self.popt <= tol)
        return np.where(at_lo, -1, np.where(at_hi, 1, 0)).astype(int)

    @property
    def correlation(self) -> np.ndarray:
        err = self.perr
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.pcov / np.outer(err, err)

    @property
    def warnings(self) -> list[str]:
        out = []
        if not self.success:
            out.append(f"Not converged: {self.message}")
        for name, a in zip(self.param_names, self.active_bounds):
            if a:
                side = "lower" if a < 0 else "upper"
                out.append(f"Parameter '{name}' is at its {side} bound; its error is not meaningful.")
        if not np.all(np.isfinite(self.pcov)):
            out.append("The covariance is singular (some parameters are not determined by the data); pcov holds inf.")
        if self.validation is not None and not getattr(self.validation, "passed", True):
            out.append("The QUALITY validation pass failed; see the validation section.")
        return out + list(self.extra_warnings)

    # -- plain data -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """A JSON-safe dict of everything in the result (inf and nan become strings)."""
        return _json_safe(
            {
                "success": self.success,
                "status": self.status.name,
                "status_code": int(self.status),
                "message": self.message,
                "params": {
                    name: {"value": float(v), "stderr": float(e), "lower": float(lo), "upper": float(hi),
                           "fixed": name in self.fixed}
                    for name, v, e, lo, hi in zip(self.param_names, self.popt, self.perr, self.lower, self.upper)
                },
                "fixed": list(self.fixed),
                "popt": self.popt.tolist(),
                "pcov": self.pcov.tolist(),
                "statistics": {
                    "n_points": self.n_points,
                    "n_params": self.n_params,
                    "dof": self.stats.dof,
                    "chi2": self.chi2,
                    "redchi": self.redchi,
                    "r2": self.r2,
                    "rmse": self.rmse,
                    "aic": self.aic,
                    "bic": self.bic,
                    "cost": self.cost,
                    "grad_norm": self.grad_norm,
                    "ssr": self.stats.ssr,
                    "sst": self.stats.sst,
                },
                "param_names": list(self.param_names),
                "nfev": self.nfev,
                "njev": self.njev,
                "nit": self.nit,
                "active_bounds": self.active_bounds.tolist(),
                "strategy": self.strategy,
                "strategy_reason": self.strategy_reason,
                "budget": self.budget,
                "tolerances": self.tolerances,
                "timings": self.timings,
                "loss": self.loss,
                "workflow": self.workflow,
                "goal": self.goal,
                "starts": self.starts,
                "checkpoints": self.checkpoints,
                "execution": self.execution,
                "validation": None if self.validation is None else self.validation.to_dict(),
                "warnings": self.warnings,
                "notes": list(self.extra_warnings),
                "plan": self.plan,
            }
        )

    def report(self) -> str:
        """A readable fit report in the spirit of lmfit's ``fit_report``."""
        lines = ["[[Fit Statistics]]"]
        st = self.stats
        rows = [
            ("status", f"{self.status.name} ({self.message})"),
            ("strategy", f"{self.strategy}" + (f" -- {self.strategy_reason}" if self.strategy_reason else "")),
            ("function evals", self.nfev),
            ("iterations", self.nit),
            ("data points", st.n_points),
            ("variables", st.n_params),
            ("chi-square", f"{st.chi2:.6g}"),
            ("reduced chi-square", f"{st.redchi:.6g}"),
            ("R-squared", f"{st.r2:.6g}"),
            ("RMSE", f"{st.rmse:.6g}"),
            ("Akaike info crit", f"{st.aic:.6g}"),
            ("Bayesian info crit", f"{st.bic:.6g}"),
        ]
        lines += [f"    {k + ':':<22}{v}" for k, v in rows]
        lines.append("[[Variables]]")
        width = max([len(n) for n in self.param_names] + [4])
        for name, v, e, a in zip(self.param_names, self.popt, self.perr, self.active_bounds):
            if name in self.fixed:
                err = "(fixed)"
            elif np.isfinite(e) and v != 0:
                err = f"+/- {e:.8g} ({abs(e / v) * 100:.2f}%)"
            elif np.isfinite(e):
                err = f"+/- {e:.8g}"
            else:
                err = "+/- (not determined)"
            tag = "  (at lower bound)" if a < 0 else "  (at upper bound)" if a > 0 else ""
            lines.append(f"    {name + ':':<{width + 2}}{v: .10g} {err}{tag}")
        corr = self.correlation
        pairs = [
            (abs(corr[i, j]), self.param_names[i], self.param_names[j], corr[i, j])
            for i in range(len(self.popt))
            for j in range(i + 1, len(self.popt))
            if self.param_names[i] not in self.fixed and self.param_names[j] not in self.fixed
            and np.isfinite(corr[i, j]) and abs(corr[i, j]) > 0.1
        ]
        if pairs:
            lines.append("[[Correlations]] (unreported correlations are < 0.100)")
            for _, a, b, c in sorted(pairs, reverse=True):
                lines.append(f"    C({a}, {b}){'':<4}= {c:+.4f}")
        lines.append("[[Workflow]]")
        if self.workflow:
            lines.append(f"    workflow: {self.workflow}   goal: {self.goal}")
        if self.tolerances:
            lines.append("    tolerances: " + ", ".join(f"{k}={v:.0e}" for k, v in self.tolerances.items()))
        if self.budget:
            b = self.budget
            lines.append(
                "    budget: "
                + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in b.items())
            )
        if str(self.execution.get("executor", "")).startswith("dask"):
            e = self.execution
            per = e.get("pass_seconds") or []
            lines.append(f"    executor: {e['executor']}, {e.get('n_workers', '?')} worker(s), {len(per)} passes, "
                         f"{sum(per) / max(len(per), 1):.3f} s per pass; resident={e.get('resident')} "
                         f"({e.get('resident_reason', '')})")
        elif self.execution:
            e = self.execution
            lines.append(
                f"    execution: {e.get('n_devices', 1)} {e.get('backend', '?')} device(s) ({e.get('device_kind', '?')}), "
                f"{e.get('n_processes', 1)} process(es), {e.get('rows_per_device', 0):,} rows per device"
                + (f" -- {e['reason']}" if e.get("reason") else "")
            )
        if self.timings:
            lines.append("    timings: " + ", ".join(f"{k}={v:.3f}s" for k, v in self.timings.items()))
        if len(self.starts) > 1:
            best = min(s.get("cost", math.inf) for s in self.starts)
            lines.append(f"    multi-start: {len(self.starts)} starts, best cost {best:.6g}")
        if self.checkpoints:
            lines.append(f"    checkpoints: {self.checkpoints}")
        if self.validation is not None:
            lines.append("[[Validation]]")
            lines += ["    " + ln for ln in str(self.validation).splitlines()]
        warns = self.warnings
        if warns:
            lines.append("[[Warnings]]")
            lines += [f"    - {w}" for w in warns]
        return "\n".join(lines)

    def __str__(self) -> str:  # print(result) is the report
        return self.report()


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON data: numpy scalars and arrays as Python numbers and lists,
    inf and nan as the strings "inf", "-inf", "nan", objects with ``to_dict()`` as dicts,
    enums as their values. :func:`restore_numbers` undoes the float strings."""
    return _json_safe(obj)


_FLOAT_WORDS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def restore_numbers(obj: Any) -> Any:
    """Inverse of :func:`json_safe` for numbers: the strings "inf", "-inf", "nan" become floats."""
    if isinstance(obj, dict):
        return {k: restore_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore_numbers(v) for v in obj]
    if isinstance(obj, str) and obj in _FLOAT_WORDS:
        return _FLOAT_WORDS[obj]
    return obj


def _number(v: Any) -> float:
    return float(_FLOAT_WORDS.get(v, v)) if isinstance(v, str) else float(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating, int)):
        return (math.isnan(a) and math.isnan(float(b))) or float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if dataclasses.is_dataclass(a) and type(a) is type(b) and not isinstance(a, FitResult):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else ("nan" if math.isnan(f) else ("inf" if f > 0 else "-inf"))
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if hasattr(obj, "to_dict"):
        return _json_safe(obj.to_dict())
    if hasattr(obj, "value") and hasattr(obj, "name"):  # enums
        return obj.value if isinstance(obj.value, (str, int)) else obj.name
    return obj
