"""Trust-region reflective (TRF) steps from a ``p x p`` factor of the Jacobian.

This is SciPy's ``least_squares(method="trf", tr_solver="exact")`` iteration, rewritten so
that it only needs, at the current point, the quantities of one fused data pass: cost
:math:`F`, gradient :math:`g = J^T \\tilde r` and a factor :math:`R` with
:math:`R^T R = J^T W J` and :math:`q` with :math:`R^T q = g`
(:class:`~.normal_eqs.LeastSquaresFactor`). The factor comes either from a QR of the data
(TSQR: :math:`J = QR`, :math:`q = Q^T r`, so the step sees :math:`\\mathrm{cond}(J)`), or
from the normal equations (a square root of the Jacobi-equilibrated :math:`J^T W J`:
fast, and exact while :math:`J` is well conditioned); :func:`tr_init` and
:func:`tr_update` take either pass result, and ``state.gram_ill`` tells a driver that the
normal equations were too ill-conditioned to trust (it then switches to TSQR).

With Coleman-Li scaling :math:`v` (distance to the bound the gradient points at, 1 for
free directions), :math:`x`-scale :math:`s`, :math:`d = \\sqrt{v}\\, s`,
:math:`\\hat J = J D` and :math:`C = \\mathrm{diag}(g \\odot \\partial v \\odot s)`, the
scaled problem :math:`[\\hat J; C^{1/2}]` is factored once more (a QR of ``2p x (p+1)``
rows, :math:`B`), and, exactly as SciPy does with the SVD of :math:`\\hat J`, the SVD
:math:`B = U \\Sigma V^T` gives the Gauss-Newton step when it is inside the radius, else
the Levenberg-Marquardt step :math:`p(\\alpha) = -V (\\Sigma^2 + \\alpha)^{-1}\\Sigma U^T u`
with :math:`\\alpha` found by a bounded number of safeguarded Newton iterations on
:math:`\\|p(\\alpha)\\| = \\Delta`. Then SciPy's ``select_step``: the step truncated at the
first bound, its reflection, and the scaled Cauchy step are compared on the quadratic
model (evaluated as :math:`\\|B w\\|^2`, never through :math:`B^T B`), and the trial point
is made strictly feasible (step-back factor :math:`\\theta = \\max(0.995, 1 - \\|g v\\|_\\infty)`).
Ratio test, radius update and the ftol/xtol/gtol tests are SciPy's, except that a trial
whose cost is >= 100x the current one shrinks the radius to 0.1 of the step, not 0.25
(MINPACK's rule; see :data:`HUGE_INCREASE`).

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
cost did not decrease (by less than :data:`HUGE_INCREASE` times: the radius then shrinks to
0.25 of the step). Propose from each (``jax.vmap(tr_propose, (0, None, None, None))``),
evaluate all ``k`` trial points in one pass (``vmap`` of ``chunk_normal_eqs`` over the
stacked ``p_trial``), then replay in order: ``state = tr_update(state_i, prop_i, neq_i)``
with ``state_i`` the scheduled state; stop at the first ``i`` where the iteration ends
(``state.nit`` increased or ``status`` is no longer RUNNING). Before using try ``i+1``,
check that the replayed state's ``radius`` and ``alpha`` equal ``sched[i+1]``'s (they do
unless try ``i`` was non-finite, raised the cost :data:`HUGE_INCREASE`-fold, or had zero
predicted and actual reduction); if not, drop
the remaining tries. This reproduces the sequential iterates exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import small_linalg
from .normal_eqs import LeastSquaresFactor, NormalEquations, as_factor, householder_r, is_finite
from .options import SolverOptions
from .status import FitStatus

EPS = float(jnp.finfo(jnp.float64).eps)
RUNNING = int(FitStatus.RUNNING)
_MAX_ALPHA_ITERS = 10  # SciPy's solve_lsq_trust_region default
_NFEV_CAP = 2**31 - 2  # max_nfev is an int32 in the compiled loop (which also adds 1)
# The polish: once a small fit has converged at its tolerances, the iteration continues at
# POLISH_TOL for at most POLISH_EVALS_PER_PARAM * n_params more passes, keeping the status it
# converged with. Below POLISH_MAX_POINTS points a pass costs microseconds, and this buys the
# last digits (NIST StRD MGH09: LRE 5.8 -> 7); larger fits stop exactly at the tolerances
# asked for (their passes are what benchmarks and budgets count).
#
# Near the minimum the cost cannot tell steps apart: a parameter error of e (relative to
# its standard error) changes the cost by ~e^2, so below e ~ 1e-8 the change is lost in the
# cost's rounding, and a rule "stop when the cost stops falling" stops at a point that
# depends on roundoff (a fit alone and the same fit in a batch, whose kernels round
# differently, then stopped one step apart, up to 4e-9 apart in popt). The gradient still
# resolves it, so any iteration (the polish included) accepts a step whose cost change is
# within rounding (POLISH_COST_NOISE) when it halves the gradient, and the polish stops
# when a step is refused or the step is below POLISH_XTOL: Gauss-Newton steps converge quadratically there, so the
# polished popt is the minimum to ~POLISH_XTOL, whichever path rounded how.
POLISH_MAX_POINTS = 10_000
POLISH_TOL = 1e-15
POLISH_EVALS_PER_PARAM = 20
POLISH_XTOL = 1e-12
POLISH_COST_NOISE = 64 * float(np.finfo(np.float64).eps)  # relative; a cost's pairwise sum rounds ~log2(n) eps
_CONVERGED = tuple(int(c) for c in (FitStatus.GTOL, FitStatus.FTOL, FitStatus.XTOL, FitStatus.FTOL_XTOL))


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
    neq: LeastSquaresFactor  # one data pass at p (as a factor of J, whichever pass made it)
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
    gram_ill: jnp.ndarray  # the last pass gave normal equations too ill-conditioned to use (switch to TSQR)
    polish_budget: jnp.ndarray  # passes the polish may still take once converged (0: no polish)
    polishing: jnp.ndarray  # converged at the asked tolerances; now continuing at POLISH_TOL
    polish_cap: jnp.ndarray  # nfev at which the polish ends
    converged_status: jnp.ndarray  # the status the fit converged with before polishing


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
    x, g = state.p, state.neq.grad
    v, dv = _cl_scaling(x, g, lb, ub)
    g_norm = jnp.max(jnp.abs(g * v))
    scale = 1.0 / state.scale_inv
    v = jnp.where(dv != 0, v * state.scale_inv, v)
    d = jnp.sqrt(v) * scale
    return d, g * dv * scale, g_norm


# -- the trust-region subproblem ------------------------------------------------------------
def _solve_subproblem(s, uf, delta, alpha0, n_rows):
    """SciPy's ``solve_lsq_trust_region``: min ||J p + f||, ||p|| <= delta, from the SVD
    ``J = U diag(s) V^T`` (here ``uf = U^T f``; the caller applies ``V``). Returns the
    step's coefficients in the ``V`` basis and the LM parameter alpha."""
    n_params = s.shape[0]
    suf = s * uf
    full_rank = (n_rows >= n_params) & (jnp.min(s) > EPS * n_rows * jnp.max(s))  # s may be unsorted
    safe_s = jnp.where(s > 0, s, 1.0)
    c_gn = jnp.where(s > 0, -uf / safe_s, 0.0)
    gn_inside = full_rank & (_norm(c_gn) <= delta)

    def phi_and_derivative(alpha):
        denom = s * s + alpha
        denom = jnp.where(denom > 0, denom, EPS)
        c = suf / denom
        pn = _norm(c)
        return pn - delta, -jnp.sum(suf * suf / denom**3) / jnp.where(pn > 0, pn, 1.0)

    alpha_upper = _norm(suf) / delta
    phi0, dphi0 = phi_and_derivative(0.0)
    alpha_lower = jnp.where(full_rank, -phi0 / jnp.where(dphi0 != 0, dphi0, -1.0), 0.0)
    reset = lambda lo, hi: jnp.maximum(0.001 * hi, jnp.sqrt(jnp.maximum(lo * hi, 0.0)))  # noqa: E731
    alpha = jnp.where((~full_rank) & (alpha0 == 0), reset(alpha_lower, alpha_upper), alpha0)

    def body(_, carry):
        alpha, lo, hi, done = carry
        a = jnp.where((alpha < lo) | (alpha > hi), reset(lo, hi), alpha)
        ph, dph = phi_and_derivative(a)
        hi_n = jnp.where(ph < 0, a, hi)
        ratio = ph / jnp.where(dph != 0, dph, -1.0)
        lo_n = jnp.maximum(lo, a - ratio)
        a_n = a - (ph + delta) * ratio / delta
        keep = lambda new, old: jnp.where(done, old, new)  # noqa: E731
        return keep(a_n, alpha), keep(lo_n, lo), keep(hi_n, hi), done | (jnp.abs(ph) < 0.01 * delta)

    alpha, _, _, _ = lax.fori_loop(0, _MAX_ALPHA_ITERS, body, (alpha, alpha_lower, alpha_upper, jnp.array(False)))
    denom = s * s + alpha
    c_lm = -suf / jnp.where(denom > 0, denom, EPS)
    cn = _norm(c_lm)
    c_lm = c_lm * (delta / jnp.where(cn > 0, cn, 1.0))
    return jnp.where(gn_inside, c_gn, c_lm), jnp.where(gn_inside, 0.0, alpha)


def _select_step(x, b_aug, g_h, p, p_h, d, delta, lb, ub, theta):
    r"""SciPy's TRF select_step: truncated, reflected or Cauchy step, best on the model.

    Every model value below is a quadratic form in three directions, the TR step
    :math:`\hat p`, its reflection :math:`\hat r` and :math:`-\hat g`, so two 3x3 Gram
    matrices (in the model metric and the plain one) give them all at once. The model
    metric is :math:`B^T B` for the augmented factor ``b_aug`` (:math:`\hat J^T \hat J + C`),
    formed from the products :math:`B w`, so that no digits are lost to squaring.
    """
    inside = jnp.all((x + p >= lb) & (x + p <= ub))
    p_stride, hits = _step_to_bound(x, p, lb, ub)
    p_stride = jnp.where(jnp.isfinite(p_stride), p_stride, 1.0)
    r_dir = jnp.where(hits != 0, -p_h, p_h)
    w = jnp.stack([p_h, r_dir, -g_h])
    bw = jnp.sum(b_aug[None, :, :] * w[:, None, :], axis=2)  # (3, rows): B w_i
    gram_a = jnp.sum(bw[:, None, :] * bw[None, :, :], axis=2)
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


def _unbounded(lower, upper) -> bool:
    """True when the bounds are constants of the traced program (NumPy arrays, as
    ``fit_batch`` passes them for a batch without bounds) and all infinite."""
    return (isinstance(lower, np.ndarray) and isinstance(upper, np.ndarray)
            and bool(np.all(np.isneginf(lower))) and bool(np.all(np.isposinf(upper))))


def _unbounded_step(x, b_aug, g_h, p, p_h, d, delta, lb, ub):
    """:func:`_select_step` where no parameter has a bound (known while tracing).

    No bound can truncate or reflect the step, so select_step keeps the trust-region step
    whenever ``x + p`` is a number, and otherwise (a NaN step) takes the scaled Cauchy step,
    whose bound is infinite. Both are computed here with select_step's own expressions (the
    same values, bit for bit), without its truncated and reflected candidates: under
    ``vmap`` every branch of select_step is evaluated for every fit, and it was ~8% of a
    batched fit's compiled time (measured, 1e4 fits x 100 points)."""
    inside = jnp.all((x + p >= lb) & (x + p <= ub))
    bw_p = jnp.sum(b_aug * p_h[None, :], axis=1)  # B p_h
    full_value = 0.5 * jnp.sum(bw_p * bw_p) + jnp.sum(p_h * g_h)
    w_g = -g_h
    bw_g = jnp.sum(b_aug * w_g[None, :], axis=1)  # B (-g_h)
    gnorm = jnp.sqrt(jnp.sum(w_g * w_g))
    to_tr = delta / jnp.where(gnorm > 0, gnorm, 1.0)
    to_bound, _ = _step_to_bound(x, -d * g_h, lb, ub)
    ag_stride = jnp.where(to_bound < to_tr, to_bound, to_tr)  # to_tr: to_bound is inf
    t_ag, ag_val = _min_quad_1d(0.5 * jnp.sum(bw_g * bw_g), jnp.sum(w_g * g_h), jnp.zeros_like(ag_stride), ag_stride)
    ag_h = -t_ag * g_h
    return jnp.where(inside, p, d * ag_h), jnp.where(inside, p_h, ag_h), -jnp.where(inside, full_value, ag_val)


# -- public step-level API ------------------------------------------------------------------
def _jac_scale_inv(neq: LeastSquaresFactor, old=None):
    norms = jnp.sqrt(jnp.sum(neq.R * neq.R, axis=0))  # column norms of J
    if old is None:
        return jnp.where(norms == 0, 1.0, norms)
    return jnp.maximum(norms, old)


def tr_init(p0, neq0, lower, upper, options) -> TRState:
    """The state at ``p0`` given one data pass there (SciPy's initial radius and tests).
    ``neq0`` is a :class:`~.normal_eqs.LeastSquaresFactor` or :class:`~.normal_eqs.NormalEquations`."""
    p0 = jnp.asarray(p0, jnp.float64)
    st = as_settings(options, p0.shape[0])
    neq0, ill = as_factor(neq0)
    finite = is_finite(neq0)
    scale_inv = _jac_scale_inv(neq0) if st.x_scale is None else 1.0 / st.x_scale
    scale_inv = jnp.where(jnp.isfinite(scale_inv) & (scale_inv > 0), scale_inv, 1.0)
    v, dv = _cl_scaling(p0, neq0.grad, lower, upper)
    g_norm = jnp.max(jnp.abs(neq0.grad * v))
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
        gram_ill=ill & finite, polish_budget=i32(_polish_budget(neq0, st, p0.shape[0])), polishing=jnp.asarray(False),
        polish_cap=i32(0), converged_status=i32(RUNNING),
    )


def _polish_budget(neq, st: TRSettings, n_params: int):
    loose = jnp.maximum(jnp.maximum(st.ftol, st.xtol), st.gtol) > POLISH_TOL
    return jnp.where(loose & (neq.count < POLISH_MAX_POINTS), POLISH_EVALS_PER_PARAM * n_params, 0)


def continue_state(fresh: TRState, before: TRState) -> TRState:
    """``fresh`` (``tr_init`` at ``before.p`` with another pass) carrying on ``before``'s
    iteration: counters, radius, LM parameter, the running Jacobian scale and the polish."""
    return fresh._replace(
        radius=before.radius, alpha=before.alpha, scale_inv=jnp.maximum(fresh.scale_inv, before.scale_inv),
        nit=before.nit, nfev=before.nfev + fresh.nfev, njev=before.njev + fresh.njev,
        status=jnp.where(fresh.status == int(FitStatus.GTOL), jnp.where(before.polishing, before.converged_status,
                                                                         fresh.status), fresh.status).astype(jnp.int32),
        polish_budget=before.polish_budget, polishing=before.polishing, polish_cap=before.polish_cap,
        converged_status=before.converged_status,
    )


def _augmented(neq: LeastSquaresFactor, d, diag_h):
    """``(B, u, n_rows)``: the factor of the scaled, Coleman-Li-augmented least-squares
    problem :math:`[\\hat J; C^{1/2}]`, :math:`[f; 0]` (SciPy augments ``J_h`` the same way),
    by one QR of ``2p x (p+1)`` rows: :math:`B^T B = \\hat J^T \\hat J + C`, :math:`B^T u = \\hat g`."""
    n_params = d.shape[0]
    top = jnp.concatenate([neq.R * d[None, :], neq.qtr[:, None]], axis=1)
    bottom = jnp.concatenate([jnp.diag(jnp.sqrt(jnp.maximum(diag_h, 0.0))), jnp.zeros((n_params, 1))], axis=1)
    out = householder_r(jnp.concatenate([top, bottom]))
    extra = jnp.sum((diag_h > 0).astype(neq.count.dtype))
    return out[:n_params, :n_params], out[:n_params, n_params], neq.count + extra


def tr_propose(state: TRState, lower, upper, options) -> Proposal:
    """The next trial point at ``state.radius`` (pure; needs no data)."""
    d, diag_h, g_norm = _scales(state, lower, upper)
    g_h = d * state.neq.grad
    b_aug, uf, n_rows = _augmented(state.neq, d, diag_h)
    b_safe = jnp.where(jnp.all(jnp.isfinite(b_aug)), b_aug, jnp.eye(b_aug.shape[0], dtype=b_aug.dtype))
    u, sv, vt = small_linalg.svd(b_safe)
    theta = jnp.maximum(0.995, 1.0 - g_norm)
    coef, alpha = _solve_subproblem(sv, jnp.sum(u * uf[:, None], axis=0), state.radius, state.alpha, n_rows)
    p_h = jnp.sum(vt * coef[:, None], axis=0)
    if _unbounded(lower, upper):
        step, step_h, predicted = _unbounded_step(state.p, b_aug, g_h, d * p_h, p_h, d, state.radius, lower, upper)
    else:
        step, step_h, predicted = _select_step(state.p, b_aug, g_h, d * p_h, p_h, d, state.radius, lower, upper, theta)
    return Proposal(_strictly_feasible(state.p + step, lower, upper), step, step_h, predicted, alpha)


# A trial whose cost is at least this many times the current cost shrinks the radius to
# 0.1 of the step instead of 0.25 (MINPACK lmder's rule for ||f_trial|| >= 10 ||f||): such
# a step left the region where the quadratic model means anything, and trying a quarter of
# it first can still land in another basin (SciPy's gh-2639 double Gaussian: TRF's 0.25
# ends at a local minimum with 540x the cost LM's 0.1 reaches).
HUGE_INCREASE = 100.0
HUGE_INCREASE_SHRINK = 0.1


def _shrink_factor(cost, cost_trial):
    """The radius, as a fraction of the step's scaled norm, after a step with ratio < 0.25."""
    return jnp.where(cost_trial >= HUGE_INCREASE * cost, HUGE_INCREASE_SHRINK, 0.25)


def tr_update(state: TRState, prop: Proposal, neq_trial, lower, upper, options) -> TRState:
    """Count the evaluation at ``prop.p_trial``; accept or reject; radius; stop tests."""
    st = as_settings(options, state.p.shape[0])
    polishing = state.polishing
    tight = jnp.asarray(POLISH_TOL, jnp.float64)
    # polishing: no ftol test (the cost cannot resolve the last digits, see POLISH_XTOL)
    st = st._replace(ftol=jnp.where(polishing, 0.0, st.ftol),
                     xtol=jnp.where(polishing, POLISH_XTOL, st.xtol),
                     gtol=jnp.where(polishing, tight, st.gtol),
                     max_nfev=jnp.where(polishing, state.polish_cap, st.max_nfev))
    max_nfev = as_settings(options, state.p.shape[0]).max_nfev
    neq_trial, ill = as_factor(neq_trial)
    nfev = state.nfev + 1
    finite = is_finite(neq_trial)
    step_h_norm = _norm(prop.step_h)
    delta = state.radius

    ared = jnp.where(finite, state.neq.cost - neq_trial.cost, -1.0)
    pred = prop.predicted
    ratio = jnp.where(pred > 0, ared / jnp.where(pred > 0, pred, 1.0), jnp.where((pred == 0) & (ared == 0), 1.0, 0.0))
    shrink = _shrink_factor(state.neq.cost, neq_trial.cost)
    delta_new = jnp.where(
        ratio < 0.25, shrink * step_h_norm, jnp.where((ratio > 0.75) & (step_h_norm > 0.95 * delta), 2.0 * delta, delta)
    )
    step_norm = _norm(prop.step)
    # any iteration: a step whose cost change is within rounding is taken when it halves the
    # gradient (near the minimum the cost cannot judge it; see POLISH_COST_NOISE)
    v_trial, _ = _cl_scaling(prop.p_trial, neq_trial.grad, lower, upper)
    g_trial = jnp.max(jnp.abs(neq_trial.grad * v_trial))
    within_rounding = (ared > -POLISH_COST_NOISE * state.neq.cost) & (g_trial < 0.5 * state.g_norm)
    accepted = finite & ((ared > 0) | within_rounding)
    ftol_ok = (ared < st.ftol * state.neq.cost) & (ratio > 0.25)
    ftol_ok = ftol_ok | (polishing & finite & ~accepted)  # a refused polish step ends the polish
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

    out_of_evals = nfev >= st.max_nfev
    iteration_over = accepted | stopped | out_of_evals

    p = jnp.where(accepted, prop.p_trial, state.p)
    neq = jax.tree_util.tree_map(lambda a, b: jnp.where(accepted, a, b), neq_trial, state.neq)
    if st.x_scale is None:
        scale_inv = jnp.where(accepted, _jac_scale_inv(neq_trial, state.scale_inv), state.scale_inv)
    else:
        scale_inv = state.scale_inv
    v, _ = _cl_scaling(p, neq.grad, lower, upper)
    g_norm = jnp.max(jnp.abs(neq.grad * v))
    # Top of SciPy's outer loop: gtol overrides; then the evaluation budget.
    code = jnp.where(iteration_over & (g_norm < st.gtol), int(FitStatus.GTOL), code)
    code = jnp.where(
        (code == RUNNING) & out_of_evals,
        jnp.where(finite, int(FitStatus.MAX_NFEV), int(FitStatus.NONFINITE)),
        code,
    )
    # the polish: a first convergence continues at POLISH_TOL (within its budget); the end of
    # the polish, whatever stopped it, reports the status the fit had converged with
    converged = jnp.isin(code, jnp.asarray(_CONVERGED))
    start_polish = (~polishing) & converged & (state.polish_budget > 0) & (nfev < max_nfev)
    converged_status = jnp.where(start_polish, code, state.converged_status)
    polish_cap = jnp.where(start_polish, jnp.minimum(nfev + state.polish_budget, max_nfev), state.polish_cap)
    code = jnp.where(start_polish, RUNNING, code)
    code = jnp.where(polishing & (code != RUNNING), state.converged_status, code)
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
        gram_ill=ill & finite,
        polish_budget=state.polish_budget,
        polishing=polishing | start_polish,
        polish_cap=polish_cap,
        converged_status=converged_status,
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
