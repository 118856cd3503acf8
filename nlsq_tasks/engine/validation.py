"""The QUALITY validation pass: is this fit a trustworthy minimum?

:func:`validate_fit` runs a fixed list of checks on a finished :class:`FitResult` and
returns a :class:`ValidationReport`. Residual diagnostics take one pass over the data
(through a :class:`ChunkSource` when the data is out of core), accumulating for the
weighted residuals :math:`r_i = (y_i - f(x_i; p))/\\sigma_i`:

* :math:`J^T J`, :math:`J^T r`, :math:`\\chi^2 = \\sum r_i^2`;
* the Wald-Wolfowitz runs test on the signs of :math:`r_i` in data order. With
  :math:`n_+` positive, :math:`n_-` negative residuals and :math:`R` runs,

  .. math::

      \\mu = \\frac{2 n_+ n_-}{n} + 1,\\qquad
      \\sigma^2_R = \\frac{(\\mu - 1)(\\mu - 2)}{n - 1},\\qquad z = \\frac{R - \\mu}{\\sigma_R};

  a wrong model leaves long stretches of same-sign residuals: :math:`z \\ll 0`;
* the lag-1 autocorrelation :math:`\\rho_1 = \\sum_i r_i r_{i+1} / \\sum_i r_i^2`, which is
  :math:`\\mathcal N(0, 1/n)` for independent residuals.

Both residual tests read residuals in data order; in-memory 1-D ``x`` is sorted first so
that the order means something; an out-of-core source is read in its own order (store it
sorted by x for these tests to be informative).

Scaled gradient: :math:`g_j = |(J^T r)_j| / (\\lVert J_{:,j}\\rVert\\,\\lVert r \\rVert)`,
the cosine between the residual and each Jacobian column (MINPACK's orthogonality test),
which is 0 at an exact minimum whatever the units.

Condition number: of the column-equilibrated Jacobian :math:`J D^{-1}`
(:math:`D` = column norms), from its TSQR factor, so it measures parameter degeneracy
rather than units, without squaring (the fit itself switches to TSQR steps above
:math:`\\sim 10^5`; above ``COND_MAX`` the check fails).

Re-fits: the standard (in memory) or streaming (source) solver is restarted from
``n_perturb`` perturbed copies of ``popt`` (each parameter moved by 3 standard errors,
or 10% of :math:`|p|` when the error is not finite, with a random sign, clipped into the
bounds) and from the runner-up multi-start point. Each must come back to the same
minimum: cost within :math:`10^{-6}` relative and every parameter within
:math:`0.05\\,\\mathrm{perr} + 10^{-6}|p|`. A re-fit that finds a *lower* cost fails the
check (the reported fit is not the minimum); the runner-up may legitimately end at a
worse local minimum (multi-modal problems), which passes with a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import numpy as np

from ..limits import DEFAULT_CHUNK_SIZE
from .covariance import condition_number
from .passes import ResidualStatsPass, SourceExecutor, evaluate
from .result import FitResult
from .sources import ArrayChunkSource, ChunkSource

RUNS_Z_MAX = 4.0  # |z| above this: residuals are not random (p ~ 6e-5 two-sided)
AUTOCORR_Z_MAX = 4.0  # |rho_1| * sqrt(n) above this
COND_MAX = 1e5  # of J (the check used 1e10 on J^T J, the same bound squared)
REDCHI_Z_MAX = 5.0  # |redchi - 1| / sqrt(2/dof) above this, when sigma is absolute
COST_RTOL = 1e-6
PARAM_PERR_TOL = 0.05
PARAM_RTOL = 1e-6
_VALIDATION_CHUNK = DEFAULT_CHUNK_SIZE


@dataclass
class Check:
    name: str
    passed: bool
    value: Any
    threshold: Any
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": self.value,
                "threshold": self.threshold, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Check":
        from .result import restore_numbers

        return cls(name=d["name"], passed=bool(d["passed"]), value=restore_numbers(d["value"]),
                   threshold=restore_numbers(d["threshold"]), detail=d.get("detail", ""))


@dataclass
class ValidationReport:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [c.to_dict() for c in self.checks]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ValidationReport":
        """The report ``to_dict()`` wrote (a stored result's validation section)."""
        return cls(passed=bool(d["passed"]), checks=[Check.from_dict(c) for c in d.get("checks", [])])

    def __str__(self) -> str:
        head = "PASSED" if self.passed else "FAILED: " + "; ".join(self.reasons)
        lines = [f"validation {head}"]
        for c in self.checks:
            mark = "ok  " if c.passed else "FAIL"
            lines.append(f"  [{mark}] {c.name:<18} value={_fmt(c.value)} threshold={_fmt(c.threshold)}  {c.detail}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# -- one pass of residual statistics -------------------------------------------------


def residual_pass(fn: Callable, source: ChunkSource, popt: np.ndarray, executor: Callable | None = None) -> dict[str, Any]:
    """One pass over ``source`` at ``popt``: the sums every residual check needs.

    It is the engine's pass interface (:mod:`.passes`) with the validation reduction
    (:class:`~.passes.ResidualStatsPass`), evaluated chunk by chunk and folded in order;
    ``executor``: a host-executor factory as in ``run_streaming`` (default: this process).
    """
    p = np.asarray(popt, dtype=np.float64)
    reduction = ResidualStatsPass(fn)
    acc = evaluate((SourceExecutor if executor is None else executor)(reduction, source), p[None, :])
    s = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], acc)
    return {"R": s.R, "JtJ": s.R.T @ s.R, "Jtr": s.Jtr, "chi2": float(s.chi2), "ssr": float(s.ssr), "n": int(s.n),
            "n_pos": int(s.n_pos), "n_neg": int(s.n_neg), "runs": int(s.runs), "lag1": float(s.lag1),
            "sum_r2": float(s.chi2)}


def runs_z(n_pos: int, n_neg: int, runs: int) -> float:
    n = n_pos + n_neg
    if n_pos == 0 or n_neg == 0 or n < 3:
        return -math.inf if n >= 3 else math.nan  # all residuals of one sign: maximally non-random
    mu = 2.0 * n_pos * n_neg / n + 1.0
    var = (mu - 1.0) * (mu - 2.0) / (n - 1.0)
    return (runs - mu) / math.sqrt(var) if var > 0 else math.nan


# -- the checks ----------------------------------------------------------------------


def validate_fit(
    fn: Callable,
    x,
    y,
    sigma,
    result: FitResult,
    options,
    *,
    source: ChunkSource | None = None,
    n_perturb: int = 5,
    seed: int = 0,
    runner_up=None,
    refit: Callable | None = None,
    executor: Callable | None = None,
) -> ValidationReport:
    """Run the QUALITY checks on ``result`` and attach the report to ``result.validation``.

    Pass in-memory ``x, y, sigma`` or ``source`` (then x, y, sigma are ignored and may be None).
    ``refit(p_start) -> FitResult`` overrides how re-fits are run (default: the standard
    solver in memory, the streaming solver for a source). ``executor``: where a source's
    passes run (a host-executor factory as in ``run_streaming``; default this process):
    the residual pass and the default re-fits use it.
    """
    popt = np.asarray(result.popt, dtype=np.float64)
    if source is None:
        xs, ys, ss = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), sigma
        if ss is not None and np.ndim(ss) == 2:
            # A covariance: the residual checks use the per-point standard deviations
            # (correlations are ignored there; the re-fits use the full covariance).
            ss = np.sqrt(np.diag(np.asarray(ss, dtype=np.float64)))
        ss = None if ss is None else np.broadcast_to(np.asarray(ss, dtype=np.float64), ys.shape)
        if xs.ndim == 1:  # residual order tests read residuals in x order
            order = np.argsort(xs, kind="stable")
            xs, ys, ss = xs[order], ys[order], None if ss is None else ss[order]
        src: ChunkSource = ArrayChunkSource(xs, ys, ss, chunk_size=_VALIDATION_CHUNK)
    else:
        src = source
    checks: list[Check] = []

    # convergence
    checks.append(Check("convergence", bool(result.status.converged), result.status.name, "converged",
                        result.status.message))

    sums = residual_pass(fn, src, popt, executor if source is not None else None)
    n, P = sums["n"], popt.size
    R, Jtr = sums["R"], sums["Jtr"]
    col = np.sqrt(np.sum(R * R, axis=0))  # column norms of J
    rnorm = math.sqrt(max(sums["chi2"], 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        g_scaled = np.abs(Jtr) / (col * rnorm)
    g_scaled = np.where(col * rnorm > 0, g_scaled, 0.0)
    g_max = float(np.max(g_scaled)) if P else 0.0
    g_tol = max(10.0 * math.sqrt(getattr(options, "ftol", 1e-8)), 10.0 * getattr(options, "gtol", 1e-8))
    free = result.active_bounds == 0
    g_free = float(np.max(g_scaled[free])) if np.any(free) else 0.0
    checks.append(Check("gradient", g_free <= g_tol, g_free, g_tol,
                        "max cosine between residual and a free parameter's Jacobian column"
                        + ("" if g_free <= g_tol else f" (max at '{result.param_names[int(np.argmax(np.where(free, g_scaled, -1)))]}')")))

    # conditioning, from the TSQR factor of J (its own condition number, not the square)
    cond = condition_number(R)
    dead = [nm for nm, c in zip(result.param_names, col) if c == 0]
    checks.append(Check("condition", cond <= COND_MAX, cond, COND_MAX,
                        "condition number of the column-equilibrated Jacobian"
                        + (f"; the data does not depend on {dead}" if dead else "")))

    at = [nm for nm, a in zip(result.param_names, result.active_bounds) if a]
    checks.append(Check("bounds", not at, len(at), 0,
                        "no parameter at a bound" if not at else f"parameters at a bound: {at}"))

    finite = bool(np.all(np.isfinite(result.pcov)))
    with np.errstate(invalid="ignore"):
        bad = [nm for nm, v in zip(result.param_names, np.diag(result.pcov)) if not np.isfinite(v)]
    checks.append(Check("finite_pcov", finite, finite, True,
                        "covariance is finite" if finite else
                        f"covariance has inf/nan: the data do not determine {bad}" if bad else
                        "covariance has inf/nan off the diagonal"))

    dof = max(n - P, 1)
    redchi = sums["chi2"] / dof
    known_sigma = bool(getattr(options, "absolute_sigma", False)) and (source.has_sigma if source is not None else sigma is not None)
    zchi = abs(redchi - 1.0) / math.sqrt(2.0 / dof)
    if known_sigma:
        checks.append(Check("reduced_chi2", zchi <= REDCHI_Z_MAX, redchi, f"1 +/- {REDCHI_Z_MAX * math.sqrt(2.0 / dof):.3g}",
                            f"absolute sigma: chi2/dof is {zchi:.1f} standard deviations from 1"))
    else:
        checks.append(Check("reduced_chi2", True, redchi, "informational",
                            "sigma is relative (or absent): chi2/dof only sets the error scale"))

    z = runs_z(sums["n_pos"], sums["n_neg"], sums["runs"])
    checks.append(Check("residual_runs", not (abs(z) > RUNS_Z_MAX), z,
                        RUNS_Z_MAX, f"{sums['runs']} runs among {sums['n_pos']}+/{sums['n_neg']}- residuals"
                        + ("; too few runs: systematic misfit (wrong model?)" if z < -RUNS_Z_MAX else "")))
    rho1 = sums["lag1"] / sums["sum_r2"] if sums["sum_r2"] > 0 else 0.0
    z_ac = abs(rho1) * math.sqrt(max(n, 1))
    checks.append(Check("autocorrelation", z_ac <= AUTOCORR_Z_MAX, rho1, AUTOCORR_Z_MAX / math.sqrt(max(n, 1)),
                        f"lag-1 autocorrelation of residuals ({z_ac:.1f} sigma from 0)"))

    # re-fits
    if refit is None:
        refit = _default_refit(fn, x, y, sigma, result, options, source, executor)
    if n_perturb > 0:
        checks.append(_perturbation_check(refit, result, n_perturb, seed))
    ru = _runner_up_start(result) if runner_up is None else np.asarray(runner_up, dtype=np.float64)
    if ru is not None:
        checks.append(_runner_up_check(refit, result, ru))

    report = ValidationReport(passed=all(c.passed for c in checks), checks=checks)
    result.validation = report
    return report


def _same_minimum(res: FitResult, ref: FitResult) -> tuple[bool, float, float]:
    """(same?, relative cost difference (negative = the re-fit is lower), worst parameter gap in tolerances)."""
    c0 = ref.cost
    dc = (res.cost - c0) / max(abs(c0), 1e-300)
    perr = np.where(np.isfinite(ref.perr), ref.perr, 0.0)
    tol = PARAM_PERR_TOL * perr + PARAM_RTOL * np.abs(ref.popt) + 1e-12
    gap = float(np.max(np.abs(res.popt - ref.popt) / tol)) if ref.popt.size else 0.0
    return abs(dc) <= COST_RTOL and gap <= 1.0, dc, gap


def _perturbation_check(refit, result: FitResult, n_perturb: int, seed: int) -> Check:
    rng = np.random.default_rng(seed)
    popt = result.popt
    perr = result.perr
    step = np.where(np.isfinite(perr) & (perr > 0), 3.0 * perr, 0.1 * np.maximum(np.abs(popt), 1e-3))
    returned, lower_found = 0, []
    worst = 0.0
    for i in range(n_perturb):
        start = popt + step * rng.choice([-1.0, 1.0], size=popt.size)
        start = np.clip(start, result.lower, result.upper)
        res = refit(start)
        same, dc, gap = _same_minimum(res, result)
        worst = max(worst, gap)
        returned += same
        if dc < -COST_RTOL:
            lower_found.append((i, res.cost))
    passed = returned == n_perturb
    detail = f"{returned}/{n_perturb} re-fits from popt +/- 3 stderr returned to the same minimum"
    if lower_found:
        detail += f"; {len(lower_found)} found a LOWER cost (best {min(c for _, c in lower_found):.6g} < {result.cost:.6g})"
    return Check("perturbed_refits", passed, f"{returned}/{n_perturb}", f"{n_perturb}/{n_perturb}", detail)


def _runner_up_start(result: FitResult):
    starts = [s for s in result.starts if np.isfinite(s.get("cost", math.inf))]
    full = [s for s in starts if s.get("stage", "full") == "full"]
    if len(full) >= 2:  # costs on all the data; screened-only costs are on a subsample
        starts = full
    if len(starts) < 2:
        return None
    starts = sorted(starts, key=lambda s: s["cost"])
    return np.asarray(starts[1]["start"], dtype=np.float64)


def _runner_up_check(refit, result: FitResult, start) -> Check:
    res = refit(np.clip(start, result.lower, result.upper))
    same, dc, gap = _same_minimum(res, result)
    if same:
        return Check("runner_up_refit", True, dc, COST_RTOL, "the runner-up start returns to the same minimum")
    if dc > COST_RTOL:
        return Check("runner_up_refit", True, dc, COST_RTOL,
                     f"the runner-up start ends at another, worse local minimum (cost {res.cost:.6g} > {result.cost:.6g})")
    return Check("runner_up_refit", False, dc, COST_RTOL,
                 f"the runner-up start reaches a LOWER cost {res.cost:.6g} < {result.cost:.6g}: the reported fit is not the minimum"
                 if dc < -COST_RTOL else "the runner-up start reaches the same cost at different parameters (non-identifiable)")


def _default_refit(fn, x, y, sigma, result: FitResult, options, source, executor=None):
    names = list(result.param_names)
    if source is None:
        from .strategies import run_standard

        def refit(p):
            return run_standard(fn, x, y, sigma, p, result.lower, result.upper, options, names)
    else:
        from .streaming import run_streaming

        def refit(p):
            return run_streaming(fn, source, p, result.lower, result.upper, options, names, resume="never",
                                 executor=executor)

    return refit
