"""``fit_global``: one fit of several data sets, some parameters shared by all of them.

With ``S`` shared parameters :math:`\\theta_s` and ``L`` per-set ones :math:`\\theta_i`, set
``i``'s residuals depend on :math:`(\\theta_s, \\theta_i)` only, so the Jacobian of the whole
problem is block sparse: :math:`J = [J^s \\mid \\mathrm{diag}(J^l_1, \\dots, J^l_K)]`. Its normal
equations are the arrow matrix

.. math::

    J^T J = \\begin{pmatrix} \\sum_i A_i & B_1 & \\cdots & B_K \\\\ B_1^T & C_1 & & \\\\
    \\vdots & & \\ddots & \\\\ B_K^T & & & C_K \\end{pmatrix},\\qquad
    \\begin{pmatrix} A_i & B_i \\\\ B_i^T & C_i \\end{pmatrix} = J_i^T J_i,

and :math:`J^T r = (\\sum_i g^s_i, g^l_1, \\dots, g^l_K)`. Each evaluation runs the single-fit
data pass on every set (``vmap`` over the padded sets, :func:`~nlsq_tasks.engine.normal_eqs.data_pass`),
which gives each set's ``(S+L) x (S+L)`` normal equations, and scatters them into the
arrow; the ``(total points x total parameters)`` Jacobian is never formed. The
trust-region iteration (:mod:`~nlsq_tasks.engine.trust_region`) then runs on the assembled
``T x T`` system, ``T = S + K L``, so the result is the same fit as the model written out
by hand as one concatenated problem (same steps, same stopping rules, same covariance
of all ``T`` parameters, shared/per-set correlations included).

The step solves the dense ``T x T`` matrix: fine for hundreds of sets; thousands of sets
with several local parameters each would want a Schur-complement step on the arrow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..engine._compiler import COMPILER_OPTIONS
from .. import _validate as V
from .._fit_options import SOLVER_OPTIONS, FitOptions
from .._plan import UNBOUNDED, make_plan, model_fn, resolve_model_spec
from ..engine.covariance import covariance
from ..engine.loop import drive
from ..engine.normal_eqs import NormalEquations, data_pass
from ..engine.result import FitResult, FitStatistics
from ..engine.status import FitStatus
from ..engine.trust_region import as_settings
from ._stack import build_stack


@dataclass
class GlobalFitResult(FitResult):
    """A :class:`FitResult` over all ``S + K L`` parameters (``param_names``: the shared
    names, then ``name[i]`` for set ``i``), with views that keep shared and per-set apart."""

    shared_names: list[str] = field(default_factory=list)
    local_names: list[str] = field(default_factory=list)
    n_sets: int = 0
    set_points: list[int] = field(default_factory=list)

    def shared(self) -> dict[str, tuple[float, float]]:
        """``{name: (value, stderr)}`` of the shared parameters."""
        err = self.perr
        return {n: (float(self.popt[j]), float(err[j])) for j, n in enumerate(self.shared_names)}

    def per_set(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values, stderrs)``, each ``(K, L)``: the per-set parameters, one row per set."""
        s, k, l_ = len(self.shared_names), self.n_sets, len(self.local_names)
        return self.popt[s:].reshape(k, l_), self.perr[s:].reshape(k, l_)

    def report(self) -> str:
        base = super().report().split("[[Variables]]")
        lines = [base[0].rstrip(), "[[Shared parameters]]"]
        for name, (v, e) in self.shared().items():
            lines.append(f"    {name + ':':<14}{v: .10g} +/- {e:.4g}")
        vals, errs = self.per_set()
        lines.append(f"[[Per-set parameters]] ({self.n_sets} sets)")
        lines.append("    set  points  " + "  ".join(f"{n:>24}" for n in self.local_names))
        for i in range(self.n_sets):
            cells = "  ".join(f"{vals[i, j]: .8g} +/- {errs[i, j]:.3g}".rjust(24) for j in range(len(self.local_names)))
            lines.append(f"    {i:>3}  {self.set_points[i]:>6}  {cells}")
        corr = self.correlation
        s = len(self.shared_names)
        pairs = [(abs(corr[a, b]), self.param_names[a], self.param_names[b], corr[a, b])
                 for a in range(s) for b in range(s, len(self.popt)) if np.isfinite(corr[a, b]) and abs(corr[a, b]) > 0.1]
        if pairs:
            lines.append("[[Shared/per-set correlations]] (|C| > 0.1)")
            lines += [f"    C({a}, {b}) = {c:+.4f}" for _, a, b, c in sorted(pairs, reverse=True)[:20]]
        rest = base[1].split("[[Workflow]]")
        if len(rest) > 1:
            lines.append("[[Workflow]]" + rest[1].rstrip())
        return "\n".join(lines)


def _datasets(datasets) -> tuple[list, list, list | None]:
    xs, ys, ss = [], [], []
    if not isinstance(datasets, (list, tuple)) or not datasets:
        raise V.FitInputError("datasets", type(datasets).__name__, "datasets must be a non-empty list of (x, y) or (x, y, sigma).")
    for i, d in enumerate(datasets):
        if isinstance(d, dict):
            d = (d.get("x"), d.get("y"), d.get("sigma"))
        if not isinstance(d, (list, tuple)) or len(d) not in (2, 3):
            raise V.FitInputError(f"datasets[{i}]", V.short(d), "each data set must be (x, y) or (x, y, sigma), or a dict with x, y[, sigma].")
        xs.append(d[0])
        ys.append(d[1])
        ss.append(d[2] if len(d) == 3 else None)
    if all(s is None for s in ss):
        return xs, ys, None
    if any(s is None for s in ss):
        raise V.FitInputError("datasets", "sigma", "give sigma for every data set or for none.")
    return xs, ys, ss


def _global_solver(fn, loss: str, tile: int, gidx: np.ndarray, n_total: int):
    """The whole global fit as one compiled call: the engine's trust-region loop
    (:func:`~nlsq_tasks.engine.loop.drive`) over the arrow-assembling evaluation."""
    gidx = np.asarray(gidx)
    rows, cols = gidx[:, :, None], gidx[:, None, :]

    def evaluate(theta, x, y, sigma, n_valid, f_scale) -> NormalEquations:
        per_set = jax.vmap(
            lambda p, xi, yi, si, ni: data_pass(fn, loss, f_scale, p, xi, yi, si, ni, tile),
            in_axes=(0, 0, 0, None if sigma is None else 0, 0),
        )(theta[gidx], x, y, sigma, n_valid)
        jtj = jnp.zeros((n_total, n_total), theta.dtype).at[rows, cols].add(per_set.JtJ)
        jtr = jnp.zeros((n_total,), theta.dtype).at[gidx].add(per_set.Jtr)
        sums = [jnp.sum(a) for a in (per_set.cost, per_set.chi2, per_set.ssr, per_set.sum_y, per_set.sum_y2, per_set.count)]
        return NormalEquations(sums[0], jtj, jtr, *sums[1:])

    def run(theta0, lower, upper, x, y, sigma, n_valid, f_scale, settings):
        state = drive(lambda theta: evaluate(theta, x, y, sigma, n_valid, f_scale), theta0, lower, upper, settings)
        mean = state.neq.sum_y / jnp.maximum(state.neq.count, 1.0)
        mask = jnp.arange(y.shape[1])[None, :] < n_valid[:, None]
        sst = jnp.sum(jnp.where(mask, (y - mean) ** 2, 0.0))
        return state, sst

    return jax.jit(run, compiler_options=COMPILER_OPTIONS)


def fit_global(
    f,
    datasets: Sequence,
    shared: Sequence[str],
    p0=None,
    bounds=UNBOUNDED,
    absolute_sigma: bool = False,
    check_finite: bool = True,
    *,
    nan_policy: str | None = None,
    workflow: str = "auto",
    goal=None,
    **kwargs,
) -> GlobalFitResult:
    """Fit ``f(x, *params)`` to every data set at once; parameters named in ``shared`` take
    one value for all sets, every other parameter one value per set.

    Parameters
    ----------
    f : as :func:`~nlsq_tasks.fit`.
    datasets : a list of ``(x, y)`` or ``(x, y, sigma)`` (or dicts with those keys); lengths may differ.
    shared : names of the shared parameters (a subset of the model's parameter names).
    p0 : None (per-set parameters from the model's guess on each set, shared ones the
        median of those guesses), ``(P,)`` (the same start for every set), ``(K, P)``
        (per set; a shared parameter starts at the mean of its column), or the full
        ``(S + K L,)`` vector in the result's order.
    bounds : as :func:`~nlsq_tasks.fit`, per model parameter (applied to every set's copy).
    **kwargs : loss, f_scale, x_scale, max_nfev, ftol, xtol, gtol.
    """
    t0 = time.perf_counter()
    fit_options = FitOptions.coerce(kwargs, "fit_global", allowed=SOLVER_OPTIONS).replace(strategy="standard")
    model = resolve_model_spec(f, None if p0 is None or np.ndim(p0) == 0 else np.atleast_2d(p0)[0])
    names = list(model.param_names)
    shared = [shared] if isinstance(shared, str) else list(shared)
    unknown = [s for s in shared if s not in names]
    if unknown or len(set(shared)) != len(shared):
        raise V.FitInputError("shared", shared, f"shared must name distinct model parameters; unknown: {unknown}; the parameters are {names}.")
    local = [n for n in names if n not in shared]
    xs, ys, ss = _datasets(datasets)
    stack = build_stack(xs, ys, ss, check_finite=check_finite, nan_policy=nan_policy, n_params=len(local) or 1)
    k, s_n, l_n = stack.n_sets, len(shared), len(local)
    n_total = s_n + k * l_n
    total_points = int(stack.n_valid.sum())
    if total_points < n_total:
        raise V.FitInputError("datasets", total_points, f"{total_points} data points in all for {n_total} parameters; at least as many points are needed.")
    pos = {n: j for j, n in enumerate(names)}
    gidx = np.empty((k, len(names)), np.int64)
    for j, n in enumerate(shared):
        gidx[:, pos[n]] = j
    for j, n in enumerate(local):
        gidx[:, pos[n]] = s_n + np.arange(k) * l_n + j

    x0, y0 = stack.set_xy(0)
    start_row = None
    if p0 is not None:  # set 0's start, for the planner's checks of p0 against the bounds
        arr = V._real_array("p0", p0)
        start_row = arr[gidx[0]] if arr.shape == (n_total,) and n_total != len(names) else np.atleast_2d(arr)[0]
    plan = make_plan(model, probe=x0[..., : V.PROBE_POINTS], guess_xy=(x0, y0), n_points=total_points,
                     n_features=stack.n_features, p0=start_row, bounds=bounds, method=None, workflow=workflow, goal=goal,
                     memory_limit_gb=None, options=fit_options, absolute_sigma=absolute_sigma,
                     covariance=False)
    theta0 = _start(p0, plan, model, stack, gidx, n_total, names)
    lower = np.empty(n_total)
    upper = np.empty(n_total)
    lower[gidx] = plan.lower[None, :]
    upper[gidx] = plan.upper[None, :]
    V.check_p0(theta0, [f"theta[{i}]" for i in range(n_total)], lower, upper)
    theta0 = V.into_bounds(theta0, lower, upper)
    options = plan.options
    settings = as_settings(options, n_total)
    if settings.x_scale is not None:  # x_scale is per model parameter: expand to every copy
        xs_full = np.empty(n_total)
        xs_full[gidx] = np.asarray(settings.x_scale)[: len(names)][None, :]
        settings = settings._replace(x_scale=xs_full)
    t_prep = time.perf_counter() - t0

    solver = _global_solver(model_fn(model), options.loss, stack.tile, gidx, n_total)
    t1 = time.perf_counter()
    state, sst = jax.device_get(solver(theta0, lower, upper, stack.x, stack.y, stack.sigma,
                                       stack.n_valid, np.float64(options.f_scale), settings))
    run_s = time.perf_counter() - t1
    neq = jax.tree_util.tree_map(np.asarray, state.neq)  # the loop's factor of J (engine.normal_eqs)
    status = FitStatus(int(state.status))
    if status == FitStatus.RUNNING:
        status = FitStatus.MAX_NFEV
    pcov = covariance(neq.R, float(neq.cost), total_points, bool(absolute_sigma)).pcov
    if status == FitStatus.NONFINITE and not np.all(np.isfinite(neq.R)):
        pcov = np.full((n_total, n_total), np.inf)
    pnames = list(shared) + [f"{n}[{i}]" for i in range(k) for n in local]
    return GlobalFitResult(
        popt=np.array(state.p, np.float64), pcov=pcov, status=status, nfev=int(state.nfev), njev=int(state.njev),
        nit=int(state.nit), cost=float(neq.cost),
        stats=FitStatistics(total_points, n_total, float(neq.chi2), float(neq.ssr), float(sst)),
        param_names=pnames, lower=lower, upper=upper, grad_norm=float(state.g_norm), strategy="global",
        strategy_reason=f"global fit of {k} data sets: {s_n} shared and {l_n} per-set parameters, "
                        "normal equations assembled per set into the arrow-shaped J^T J",
        tolerances=plan.tolerances, timings={"prepare": t_prep, "run": run_s, "total": time.perf_counter() - t0},
        loss=options.loss, workflow=plan.workflow, goal=None if plan.goal is None else plan.goal.name.lower(),
        extra_warnings=[f"nan_policy='omit' dropped {int(stack.omitted.sum())} point(s) with NaN or inf."]
        if stack.omitted.sum() else [],
        shared_names=list(shared), local_names=local, n_sets=k, set_points=[int(n) for n in stack.n_valid],
    )


def _start(p0, plan, model, stack, gidx, n_total: int, names: list[str]) -> np.ndarray:
    k, p = gidx.shape
    if p0 is not None:
        arr = V._real_array("p0", p0)
        if arr.size == n_total and arr.ndim == 1 and arr.size != p:
            return arr.astype(np.float64).copy()
        rows = np.broadcast_to(arr, (k, p)) if arr.shape == (p,) else arr
        if rows.shape != (k, p):
            raise V.FitInputError("p0", arr.shape, f"p0 must be ({p},), ({k}, {p}) or ({n_total},); got {arr.shape}.")
    else:
        rows = np.empty((k, p))
        for i in range(k):
            g = model.guess(*stack.set_xy(i)) if callable(getattr(model, "guess", None)) else None
            rows[i] = plan.p0 if g is None or np.shape(g) != (p,) or not np.all(np.isfinite(g)) else g
    theta = np.zeros(n_total)
    agg = np.median if p0 is None else np.mean
    for j in range(p):
        cols = np.unique(gidx[:, j])
        if cols.size == 1:  # shared
            theta[cols[0]] = agg(rows[:, j])
        else:
            theta[gidx[:, j]] = rows[:, j]
    return theta

