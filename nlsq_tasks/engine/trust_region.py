"""Trust-region reflective (TRF) steps on the ``p x p`` normal equations.

This is SciPy's ``least_squares(method="trf", tr_solver="exact")`` iteration, rewritten so
that it only needs, at the current point, the quantities of one fused data pass
(:class:`~.normal_eqs.NormalEquations`): cost :math:`F`, :math:`H = J^T W J` and
:math:`g = J^T \\tilde r`. With Coleman-Li scaling :math:`v` (distance to the bound the
gradient points at, 1 for free directions), :math:`x`-scale :math:`s` and

.. math::

    d = \\sqrt{v}\\, s, \\quad \\hat g = d \\odot g, \\quad
    \\hat H = D H D, \\quad C = \\mathrm{diag}(g \\odot \\partial v \\odot s),

the step in scaled variables solves :math:`\\min \\hat g^T \\hat p + \\tfrac12 \\hat p^T(\\hat H + C)\\hat p`
subject to :math:`\\|\\hat p\\| \\le \\Delta`: the Gauss-Newton step when it is inside,
otherwise :math:`(\\hat H + C + \\alpha I)\\hat p = -\\hat g` with :math:`\\alpha` found by a
bounded number of safeguarded Newton iterations on :math:`\\|\\hat p(\\alpha)\\| = \\Delta`
using one Cholesky factorization of the ``p x p`` matrix per iteration. Then SciPy's ``select_step``: the step truncated
at the first bound, its reflection, and the scaled Cauchy step are compared on the
quadratic model, and the trial point is made strictly feasible (step-back factor
:math:`\\theta = \\max(0.995, 1 - \\|g v\\|_\\infty)`). Ratio test, radius update and the
ftol/xtol/gtol tests are SciPy's.

Accuracy: the Gauss-Newton step is solved on the Jacobi-equilibrated matrix
:math:`S(\\hat H + C)S`, :math:`S = \\mathrm{diag}^{-1/2}`, so ill-conditioned problems keep
their digits; the fixed point :math:`g = 0` does not depend on the solve, only on the
accuracy of :math:`g`, which is a plain sum over points.

Driving the iteration (all functions pure and jittable; ``options`` is a
:class:`~.options.SolverOptions` or a :class:`TRSettings`)::

    neq0  = <one data pass at p0>
    state = tr_init(p0, neq0, lower, upper, options)
    while state.status == FitStatus.RUNNING:
        prop  = tr_propose(state, lower, upper, options)       # Proposal; no data needed
        neq   = <one data pass at prop.p_trial>
        state = tr_update(state, prop, neq, lower, upper, options)

Shapes (stable since the first commit): ``tr_propose`` returns a :class:`Proposal`, not a
bare step (the step is ``.step``, the point to evaluate ``.p_trial``, strictly feasible);
``tr_update`` takes that Proposal, because the ratio test needs its predicted reduction.

``tr_update`` counts the evaluation (``nfev``), accepts or rejects, shrinks or grows the
radius, sets ``status`` (``RUNNING`` until one of FitStatus' stop codes), and bounds the
loop by ``max_nfev``. On acceptance ``state.neq`` is the trial's normal equations, so the
statistics at the final point are ``state.neq`` (no extra pass).

Several radii in one pass (streaming): ``sched = radius_schedule(state, k, lower, upper,
options)`` returns the ``k`` states (stacked on a leading axis) the sequential algorithm
would be in before its 1st, 2nd, ... try, assuming each earlier try is rejected because the
cost did not decrease. Propose from each (``jax.vmap(tr_propose, (0, None, None, None))``),
evaluate all ``k`` trial points in one pass (``vmap`` of ``chunk_normal_eqs`` over the
stacked ``p_trial``), then replay in order: ``state = tr_update(state_i, prop_i, neq_i)``
with ``state_i`` the scheduled state; stop at the first ``i`` where the iteration ends
(``state.nit`` increased or ``status`` is no longer RUNNING). Before using try ``i+1``,
check that the replayed state's ``radius`` and ``alpha`` equal ``sched[i+1]``'s (they do
unless try ``i`` was non-finite or had zero predicted and actual reduction); if not, drop
the remaining tries. This reproduces the sequential iterates exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .normal_eqs import NormalEquations, is_finite
from .options import SolverOptions
from .small_linalg import cho_solve, cholesky, solve_lower
from .status import FitStatus

EPS = float(jnp.finfo(jnp.float64).eps)
RUNNING = int(FitStatus.RUNNING)
_MAX_ALPHA_ITERS = 10  # SciPy's solve_lsq_trust_region default
_NFEV_CAP = 2**31 - 2  # max_nfev is an int32 in the compiled loop (which also adds 1)


class TRSettings(NamedTuple):
    """The numbers of :class:`SolverOptions` the iteration uses, as a pytree (so that a
    compiled loop can take them as arguments). ``x_scale`` is None for ``"jac"``."""

    ftol: jnp.ndarray
    xtol: jnp.ndarray
    gtol: jnp.ndarray
    max_nfev: jnp.ndarray
    x_scale: jnp.ndarray | None


def as_settings(options, n_params: int) -> TRSettings:
    if isinstance(options, TRSettings):
        return options
    o: SolverOptions = options
    # numpy, not jnp: these are arguments of a compiled call, and creating device arrays
    # one by one costs more (~0.1 ms each) than the whole loop on small data
    xs = None if isinstance(o.x_scale, str) else np.broadcast_to(np.asarray(o.x_scale, np.float64), (n_params,)).copy()
    return TRSettings(
        np.float64(o.ftol), np.float64(o.xtol), np.float64(o.gtol), np.int32(min(o.max_evaluations(n_params), _NFEV_CAP)), xs
    )


class TRState(NamedTuple):
    p: jnp.ndarray  # current (accepted) parameters
    neq: NormalEquations  # one data pass at p
    radius: jnp.ndarray  # trust radius Delta in scaled variables
    alpha: jnp.ndarray  # Levenberg-Marquardt parameter carried between solves
    scale_inv: jnp.ndarray  # 1 / x-scale (running max of Jacobian column norms for "jac")
    nit: jnp.ndarray  # completed outer iterations
    nfev: jnp.ndarray  # data passes (each also forms the normal equations)
    njev: jnp.ndarray  # Jacobians used, counted as SciPy does (1 + accepted steps)
    status: jnp.ndarray  # FitStatus code; RUNNING while iterating
    g_norm: jnp.ndarray  # ||g v||_inf at p
    step_norm: jnp.ndarray  # norm of the last tried step
    actual_reduction: jnp.ndarray  # cost reduction of the last tried step
    last_nonfinite: jnp.ndarray  # the last trial was non-finite


class Proposal(NamedTuple):
    p_trial: jnp.ndarray  # strictly feasible trial point (evaluate the data here)
    step: jnp.ndarray  # p_trial's step before make_strictly_feasible
    step_h: jnp.ndarray  # the step in scaled variables
    predicted: jnp.ndarray  # predicted cost reduction on the quadratic model
    alpha: jnp.ndarray  # the LM parameter the solve ended with


# -- small helpers (SciPy's _lsq.common, on p-vectors) -------------------------------------
def _cl_scaling(x, g, lb, ub):
    """Coleman-Li vector v and its derivative sign dv."""
    to_ub = (g < 0) & jnp.isfinite(ub)
    to_lb = (g > 0) & jnp.isfinite(lb)
    v = jnp.where(to_lb, x - lb, jnp.where(to_ub, ub - x, 1.0))
    dv = jnp.where(to_lb, 1.0, jnp.where(to_ub, -1.0, 0.0))
    return v, dv


# Products of p-vectors are written as elementwise ops + sums, not `@`: XLA:CPU fuses
# those into a few kernels, while every tiny `dot` is its own kernel, and compile time
# grows with the number of kernels (measured ~35 ms each).
def _dot(a, b):
    return jnp.sum(a * b)


def _bilinear(u, hh, v):
    """u^T H v."""
    return jnp.sum(u[:, None] * hh * v[None, :])


def _norm(v):
    return jnp.sqrt(jnp.sum(v * v))


def _min_quad_1d(a, b, lo, hi, c=0.0):
    """argmin and min of a t^2 + b t + c on [lo, hi] (ties: lo, hi, then the extremum,
    like SciPy's argmin over [lo, hi, extremum])."""
    safe_a = jnp.where(a != 0, a, 1.0)
    ext = -0.5 * b / safe_a
    inside = (a != 0) & (lo < ext) & (ext < hi)
    ext = jnp.where(inside, ext, lo)
    y_lo, y_hi, y_ext = (t * (a * t + b) + c for t in (lo, hi, ext))
    take_lo = (y_lo <= y_hi) & (y_lo <= y_ext)
    take_hi = (~take_lo) & (y_hi <= y_ext)
    return (
        jnp.where(take_lo, lo, jnp.where(take_hi, hi, ext)),
        jnp.where(take_lo, y_lo, jnp.where(take_hi, y_hi, y_ext)),
    )


def _step_to_bound(x, s, lb, ub):
    """Largest t with x + t s feasible, and which components hit (sign of s)."""
    nz = s != 0
    safe = jnp.where(nz, s, 1.0)
    steps = jnp.where(nz, jnp.maximum((lb - x) / safe, (ub - x) / safe), jnp.inf)
    t = jnp.min(steps)
    return t, jnp.where(steps == t, jnp.sign(s), 0.0)


def _strictly_feasible(x, lb, ub):
    """SciPy's make_strictly_feasible(rstep=0): move points on a bound one ulp inside."""
    x = jnp.where(x <= lb, jnp.nextafter(lb, ub), x)
    x = jnp.where(x >= ub, jnp.nextafter(ub, lb), x)
    tight = (x < lb) | (x > ub)  # only possible when both bounds are finite
    both = jnp.isfinite(lb) & jnp.isfinite(ub)
    mid = 0.5 * (jnp.where(both, lb, 0.0) + jnp.where(both, ub, 0.0))
    return jnp.where(tight & both, mid, x)


def _scales(state: TRState, lb, ub):
    x, g = state.p, state.neq.Jtr
    v, dv = _cl_scaling(x, g, lb, ub)
    g_norm = jnp.max(jnp.abs(g * v))
    scale = 1.0 / state.scale_inv
    v = jnp.where(dv != 0, v * state.scale_inv, v)
    d = jnp.sqrt(v) * scale
    return d, g * dv * scale, g_norm


# -- the trust-region subproblem ------------------------------------------------------------
def _solve_subproblem(a_mat, g_h, delta, alpha0, n_points):
    """min g_h^T p + 0.5 p^T A p, ||p|| <= delta (SciPy's solve_lsq_trust_region on A = J^T J)."""
    n_params = g_h.shape[0]
    # Gauss-Newton step by Cholesky of the Jacobi-equilibrated matrix B = S A S (unit
    # diagonal, so its conditioning is the problem's own, not its units'). A failed or
    # nearly singular factorization means "not full rank", as SciPy's SVD test would.
    dg = jnp.diag(a_mat)
    sj = jnp.where(dg > 0, 1.0 / jnp.sqrt(jnp.where(dg > 0, dg, 1.0)), 1.0)
    chol = cholesky(a_mat * sj[:, None] * sj[None, :])
    piv = jnp.diag(chol)
    full_rank = (n_points >= n_params) & jnp.all(jnp.isfinite(chol)) & (jnp.min(piv) ** 2 > 10.0 * EPS * n_params)
    safe_chol = jnp.where(full_rank, chol, jnp.eye(n_params, dtype=a_mat.dtype))
    p_gn = -sj * cho_solve(safe_chol, sj * g_h)
    gn_inside = full_rank & (_norm(p_gn) <= delta)

    # Levenberg-Marquardt family p(alpha) = -(A + alpha I)^-1 g_h, one Cholesky per trial
    # alpha (MINPACK's way; SciPy uses an SVD, which is the same function of alpha):
    #   phi(alpha) = ||p|| - delta,  phi'(alpha) = -p^T (A + alpha I)^-1 p / ||p||.
    eye = jnp.eye(n_params, dtype=a_mat.dtype)
    tiny = EPS * jnp.maximum(jnp.max(jnp.abs(dg)), 1e-300)

    def lm_step(alpha):
        chol_a = cholesky(a_mat + jnp.maximum(alpha, tiny) * eye)
        chol_a = jnp.where(jnp.all(jnp.isfinite(chol_a)), chol_a, eye)
        p = -cho_solve(chol_a, g_h)
        q = solve_lower(chol_a, p)
        pn = _norm(p)
        return p, pn - delta, -jnp.sum(q * q) / jnp.where(pn > 0, pn, 1.0)

    q0 = solve_lower(safe_chol, sj * p_gn)
    pn0 = _norm(p_gn)
    phi0, dphi0 = pn0 - delta, -jnp.sum(q0 * q0) / jnp.where(pn0 > 0, pn0, 1.0)
    alpha_upper = _norm(g_h) / delta
    alpha_lower = jnp.where(full_rank, -phi0 / jnp.where(dphi0 != 0, dphi0, -1.0), 0.0)
    reset = lambda lo, hi: jnp.maximum(0.001 * hi, jnp.sqrt(jnp.maximum(lo * hi, 0.0)))  # noqa: E731
    alpha = jnp.where((~full_rank) & (alpha0 == 0), reset(alpha_lower, alpha_upper), alpha0)

    def body(_, carry):
        alpha, lo, hi, done = carry
        a = jnp.where((alpha < lo) | (alpha > hi), reset(lo, hi), alpha)
        _, ph, dph = lm_step(a)
        hi_n = jnp.where(ph < 0, a, hi)
        ratio = ph / jnp.where(dph != 0, dph, -1.0)
        lo_n = jnp.maximum(lo, a - ratio)
        a_n = a - (ph + delta) * ratio / delta
        keep = lambda new, old: jnp.where(done, old, new)  # noqa: E731
        return keep(a_n, alpha), keep(lo_n, lo), keep(hi_n, hi), done | (jnp.abs(ph) < 0.01 * delta)

    alpha, _, _, _ = lax.fori_loop(0, _MAX_ALPHA_ITERS, body, (alpha, alpha_lower, alpha_upper, jnp.array(False)))
    p_lm, _, _ = lm_step(alpha)
    pn = _norm(p_lm)
    p_lm = p_lm * (delta / jnp.where(pn > 0, pn, 1.0))
    return jnp.where(gn_inside, p_gn, p_lm), jnp.where(gn_inside, 0.0, alpha)


def _select_step(x, hh, diag_h, g_h, p, p_h, d, delta, lb, ub, theta):
    r"""SciPy's TRF select_step: truncated, reflected or Cauchy step, best on the model.

    Every model value below is a quadratic form in three directions, the TR step
    :math:`\hat p`, its reflection :math:`\hat r` and :math:`-\hat g`, so two 3x3 Gram
    matrices (in the model metric and the plain one) give them all at once.
    """
    a_mat = hh + jnp.diag(diag_h)
    inside = jnp.all((x + p >= lb) & (x + p <= ub))
    p_stride, hits = _step_to_bound(x, p, lb, ub)
    p_stride = jnp.where(jnp.isfinite(p_stride), p_stride, 1.0)
    r_dir = jnp.where(hits != 0, -p_h, p_h)
    w = jnp.stack([p_h, r_dir, -g_h])
    gram_a = jnp.sum(w[:, None, :, None] * a_mat[None, None, :, :] * w[None, :, None, :], axis=(2, 3))
    gram = jnp.sum(w[:, None, :] * w[None, :, :], axis=2)
    gw = jnp.sum(w * g_h[None, :], axis=1)
    full_value = 0.5 * gram_a[0, 0] + gw[0]

    # reflection from the point where the step hits the first bound
    pt, pt_h = p * p_stride, p_h * p_stride
    aa, bb = gram[1, 1], p_stride * gram[0, 1]
    aa = jnp.where(aa == 0, 1.0, aa)
    cc = p_stride**2 * gram[0, 0] - delta**2
    disc = jnp.sqrt(jnp.maximum(bb * bb - aa * cc, 0.0))
    q = -(bb + jnp.where(bb >= 0, disc, -disc))
    q = jnp.where(q == 0, -EPS, q)
    to_tr = jnp.maximum(q / aa, cc / q)  # the positive root of ||pt_h + t r_h|| = delta
    to_bound, _ = _step_to_bound(x + pt, d * r_dir, lb, ub)
    r_stride = jnp.minimum(to_bound, to_tr)
    pos = r_stride > 0
    r_lo = jnp.where(pos, (1 - theta) * p_stride / jnp.where(pos, r_stride, 1.0), 0.0)
    r_hi = jnp.where(pos, jnp.where(r_stride == to_bound, theta * to_bound, to_tr), -1.0)
    has_r = r_lo <= r_hi
    a1 = 0.5 * gram_a[1, 1]
    b1 = gw[1] + p_stride * gram_a[0, 1]
    c1 = 0.5 * p_stride**2 * gram_a[0, 0] + p_stride * gw[0]
    t_r, r_val = _min_quad_1d(a1, b1, r_lo, jnp.where(has_r, r_hi, r_lo), c1)
    r_val = jnp.where(has_r, r_val, jnp.inf)
    r_h = pt_h + t_r * r_dir

    # the truncated step, stepped back by theta
    ts = theta * p_stride
    p_val = 0.5 * ts**2 * gram_a[0, 0] + ts * gw[0]

    # the scaled Cauchy step along -g_h
    gnorm = jnp.sqrt(gram[2, 2])
    to_tr = delta / jnp.where(gnorm > 0, gnorm, 1.0)
    to_bound, _ = _step_to_bound(x, -d * g_h, lb, ub)
    ag_stride = jnp.where(to_bound < to_tr, theta * to_bound, to_tr)
    t_ag, ag_val = _min_quad_1d(0.5 * gram_a[2, 2], gw[2], jnp.zeros_like(ag_stride), ag_stride)
    ag_h = -t_ag * g_h

    use_p = (p_val < r_val) & (p_val < ag_val)
    use_r = (~use_p) & (r_val < p_val) & (r_val < ag_val)
    step_h = jnp.where(use_p, theta * pt_h, jnp.where(use_r, r_h, ag_h))
    step = jnp.where(use_p, theta * pt, d * step_h)
    value = jnp.where(use_p, p_val, jnp.where(use_r, r_val, ag_val))
    return (
        jnp.where(inside, p, step),
        jnp.where(inside, p_h, step_h),
        -jnp.where(inside, full_value, value),
    )


# -- public step-level API ------------------------------------------------------------------
def _jac_scale_inv(neq: NormalEquations, old=None):
    norms = jnp.sqrt(jnp.maximum(jnp.diag(neq.JtJ), 0.0))
    if old is None:
        return jnp.where(norms == 0, 1.0, norms)
    return jnp.maximum(norms, old)


def tr_init(p0, neq0: NormalEquations, lower, upper, options) -> TRState:
    """The state at ``p0`` given one data pass there (SciPy's initial radius and tests)."""
    p0 = jnp.asarray(p0, jnp.float64)
    st = as_settings(options, p0.shape[0])
    finite = is_finite(neq0)
    scale_inv = _jac_scale_inv(neq0) if st.x_scale is None else 1.0 / st.x_scale
    scale_inv = jnp.where(jnp.isfinite(scale_inv) & (scale_inv > 0), scale_inv, 1.0)
    v, dv = _cl_scaling(p0, neq0.Jtr, lower, upper)
    g_norm = jnp.max(jnp.abs(neq0.Jtr * v))
    v = jnp.where(dv != 0, v * scale_inv, v)
    radius = _norm(p0 * scale_inv / jnp.sqrt(v))
    radius = jnp.where((radius == 0) | ~jnp.isfinite(radius), 1.0, radius)
    status = jnp.where(
        ~finite,
        int(FitStatus.NONFINITE),
        jnp.where(g_norm < st.gtol, int(FitStatus.GTOL), jnp.where(st.max_nfev <= 1, int(FitStatus.MAX_NFEV), RUNNING)),
    )
    zero = jnp.zeros((), jnp.float64)
    i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    return TRState(
        p=p0, neq=neq0, radius=radius, alpha=zero, scale_inv=scale_inv, nit=i32(0), nfev=i32(1), njev=i32(1),
        status=i32(status), g_norm=g_norm, step_norm=zero, actual_reduction=zero, last_nonfinite=~finite,
    )


def tr_propose(state: TRState, lower, upper, options) -> Proposal:
    """The next trial point at ``state.radius`` (pure; needs no data)."""
    d, diag_h, g_norm = _scales(state, lower, upper)
    g_h = d * state.neq.Jtr
    hh = state.neq.JtJ * d[:, None] * d[None, :]
    a_mat = hh + jnp.diag(diag_h)
    theta = jnp.maximum(0.995, 1.0 - g_norm)
    p_h, alpha = _solve_subproblem(a_mat, g_h, state.radius, state.alpha, state.neq.count)
    step, step_h, predicted = _select_step(state.p, hh, diag_h, g_h, d * p_h, p_h, d, state.radius, lower, upper, theta)
    return Proposal(_strictly_feasible(state.p + step, lower, upper), step, step_h, predicted, alpha)


def tr_update(state: TRState, prop: Proposal, neq_trial: NormalEquations, lower, upper, options) -> TRState:
    """Count the evaluation at ``prop.p_trial``; accept or reject; radius; stop tests."""
    st = as_settings(options, state.p.shape[0])
    nfev = state.nfev + 1
    finite = is_finite(neq_trial)
    step_h_norm = _norm(prop.step_h)
    delta = state.radius

    ared = jnp.where(finite, state.neq.cost - neq_trial.cost, -1.0)
    pred = prop.predicted
    ratio = jnp.where(pred > 0, ared / jnp.where(pred > 0, pred, 1.0), jnp.where((pred == 0) & (ared == 0), 1.0, 0.0))
    delta_new = jnp.where(
        ratio < 0.25, 0.25 * step_h_norm, jnp.where((ratio > 0.75) & (step_h_norm > 0.95 * delta), 2.0 * delta, delta)
    )
    step_norm = _norm(prop.step)
    ftol_ok = (ared < st.ftol * state.neq.cost) & (ratio > 0.25)
    xtol_ok = step_norm < st.xtol * (st.xtol + _norm(state.p))
    code = jnp.where(
        ftol_ok & xtol_ok,
        int(FitStatus.FTOL_XTOL),
        jnp.where(ftol_ok, int(FitStatus.FTOL), jnp.where(xtol_ok, int(FitStatus.XTOL), RUNNING)),
    )
    code = jnp.where(finite, code, RUNNING)
    stopped = code != RUNNING
    # Non-finite trial: shrink, keep alpha (SciPy `continue`s before its alpha update).
    radius = jnp.where(finite, jnp.where(stopped, delta, delta_new), 0.25 * step_h_norm)
    alpha = jnp.where(finite & ~stopped, prop.alpha * delta / jnp.where(delta_new > 0, delta_new, 1.0), prop.alpha)

    accepted = finite & (ared > 0)
    out_of_evals = nfev >= st.max_nfev
    iteration_over = accepted | stopped | out_of_evals

    p = jnp.where(accepted, prop.p_trial, state.p)
    neq = jax.tree_util.tree_map(lambda a, b: jnp.where(accepted, a, b), neq_trial, state.neq)
    if st.x_scale is None:
        scale_inv = jnp.where(accepted, _jac_scale_inv(neq_trial, state.scale_inv), state.scale_inv)
    else:
        scale_inv = state.scale_inv
    v, _ = _cl_scaling(p, neq.Jtr, lower, upper)
    g_norm = jnp.max(jnp.abs(neq.Jtr * v))
    # Top of SciPy's outer loop: gtol overrides; then the evaluation budget.
    code = jnp.where(iteration_over & (g_norm < st.gtol), int(FitStatus.GTOL), code)
    code = jnp.where(
        (code == RUNNING) & out_of_evals,
        jnp.where(finite, int(FitStatus.MAX_NFEV), int(FitStatus.NONFINITE)),
        code,
    )
    return TRState(
        p=p,
        neq=neq,
        radius=radius,
        alpha=alpha,
        scale_inv=scale_inv,
        nit=state.nit + iteration_over.astype(jnp.int32),
        nfev=nfev,
        njev=state.njev + accepted.astype(jnp.int32),
        status=code.astype(jnp.int32),
        g_norm=g_norm,
        step_norm=jnp.where(accepted, step_norm, 0.0),
        actual_reduction=jnp.where(accepted, ared, 0.0),
        last_nonfinite=~finite,
    )


def radius_schedule(state: TRState, k: int, lower, upper, options) -> TRState:
    """The ``k`` states the sequential loop would try from, after 0, 1, ... k-1 rejections
    by cost (stacked on a leading axis; ``.radius`` are the radii). See module docstring."""

    def body(s, _):
        prop = tr_propose(s, lower, upper, options)
        new_radius = 0.25 * _norm(prop.step_h)
        nxt = s._replace(radius=new_radius, alpha=prop.alpha * s.radius / jnp.where(new_radius > 0, new_radius, 1.0))
        return nxt, s

    _, states = lax.scan(body, state, None, length=k)
    return states
