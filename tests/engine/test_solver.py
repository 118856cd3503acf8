"""run_standard against scipy.optimize.curve_fit(method="trf"), and the step-level API.

SciPy gets the exact Jacobian (from JAX) and the same tolerances, so both solve the same
problem to the same stopping rule; agreement is then a property of the algorithm, not of
finite differences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import curve_fit

import nlsq_tasks  # noqa: F401  (float64)
from nlsq_tasks.engine.loop import bucket_size
from nlsq_tasks.engine.normal_eqs import chunk_normal_eqs, data_pass
from nlsq_tasks.engine.options import SolverOptions
from nlsq_tasks.engine.status import FitStatus
from nlsq_tasks.engine.strategies import run_standard
from nlsq_tasks.engine.trust_region import (
    HUGE_INCREASE,
    HUGE_INCREASE_SHRINK,
    radius_schedule,
    tr_init,
    tr_propose,
    tr_update,
)

TOL = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)
INF3 = (np.full(3, -np.inf), np.full(3, np.inf))


def expdecay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def plane_exp(x, a, b, c):  # two features: x is (2, n)
    return a * jnp.exp(-b * x[0]) + c * x[1]


def scipy_fit(fn, x, y, p0, *, sigma=None, bounds=INF3, absolute_sigma=False, **kw):
    """curve_fit(trf) with the exact JAX Jacobian."""
    p0 = np.asarray(p0, float)

    def f_np(xx, *p):
        return np.asarray(fn(jnp.asarray(xx), *p))

    jac_fn = jax.jit(jax.jacfwd(lambda p, xx: fn(xx, *p)))

    def jac(xx, *p):
        return np.asarray(jac_fn(jnp.asarray(p), jnp.asarray(xx)))

    return curve_fit(
        f_np, x, y, p0=p0, sigma=sigma, absolute_sigma=absolute_sigma, bounds=bounds, method="trf", jac=jac, **TOL, **kw
    )


def ours(fn, x, y, p0, *, sigma=None, bounds=INF3, **opts):
    o = SolverOptions(**{**TOL, **opts})
    lo, hi = (np.broadcast_to(np.asarray(b, float), (len(p0),)).copy() for b in bounds)
    return run_standard(fn, x, y, sigma, np.asarray(p0, float), lo, hi, o, [f"p{i}" for i in range(len(p0))])


def assert_close(res, popt, pcov, rtol_p=1e-6, rtol_c=1e-4):
    np.testing.assert_allclose(res.popt, popt, rtol=rtol_p, atol=1e-12)
    np.testing.assert_allclose(res.pcov, pcov, rtol=rtol_c, atol=1e-4 * np.abs(pcov).max())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    n = 400
    x = np.linspace(0, 10, n)
    sigma = 0.02 + 0.05 * rng.random(n)
    y = 2.0 * np.exp(-0.5 * x) + 0.3 + sigma * rng.standard_normal(n)
    y_out = y.copy()
    y_out[::37] += 1.5 * rng.choice([-1, 1], size=y_out[::37].size)  # outliers for robust losses
    return x, y, sigma, y_out


@pytest.mark.parametrize("x_scale", [1.0, "jac", (2.0, 0.5, 1.0)])
def test_unbounded_matches_scipy(data, x_scale):
    x, y, _, _ = data
    popt, pcov = scipy_fit(expdecay, x, y, [1, 1, 0], x_scale=x_scale)
    xs = x_scale if isinstance(x_scale, (str, tuple)) else (x_scale,) * 3
    res = ours(expdecay, x, y, [1, 1, 0], x_scale=xs)
    assert res.success, res.message
    assert_close(res, popt, pcov)
    # the statistics are those of the solution
    f = np.asarray(expdecay(x, *res.popt))
    assert res.stats.ssr == pytest.approx(np.sum((f - y) ** 2), rel=1e-12)
    assert res.r2 == pytest.approx(1 - np.sum((f - y) ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-12)
    assert res.cost == pytest.approx(0.5 * np.sum((f - y) ** 2), rel=1e-12)


@pytest.mark.parametrize("x_scale", [1.0, "jac"])
def test_bounds_active_and_inactive_match_scipy(data, x_scale):
    x, y, _, _ = data
    bounds = ([0.0, 0.6, -1.0], [3.0, 2.0, 1.0])  # b is pushed onto its lower bound
    popt, pcov = scipy_fit(expdecay, x, y, [1, 1, 0], bounds=bounds, x_scale=x_scale)
    xs = x_scale if isinstance(x_scale, str) else (x_scale,) * 3
    res = ours(expdecay, x, y, [1, 1, 0], bounds=bounds, x_scale=xs)
    assert res.success
    assert_close(res, popt, pcov)
    assert res.active_bounds.tolist() == [0, -1, 0]
    bounds = ([0.0, 0.0, -1.0], [3.0, 2.0, 1.0])  # all inactive
    popt, pcov = scipy_fit(expdecay, x, y, [1, 1, 0], bounds=bounds, x_scale=x_scale)
    assert_close(ours(expdecay, x, y, [1, 1, 0], bounds=bounds, x_scale=xs), popt, pcov)


@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_sigma_1d_matches_scipy(data, absolute_sigma):
    x, y, sigma, _ = data
    popt, pcov = scipy_fit(expdecay, x, y, [1, 1, 0], sigma=sigma, absolute_sigma=absolute_sigma, x_scale="jac")
    res = ours(expdecay, x, y, [1, 1, 0], sigma=sigma, absolute_sigma=absolute_sigma)
    assert_close(res, popt, pcov)
    f = np.asarray(expdecay(x, *res.popt))
    assert res.chi2 == pytest.approx(np.sum(((f - y) / sigma) ** 2), rel=1e-10)


@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_sigma_2d_matches_scipy(absolute_sigma):
    rng = np.random.default_rng(3)
    n = 60
    x = np.linspace(0, 6, n)
    dist = np.abs(x[:, None] - x[None, :])
    cov = 0.03**2 * np.exp(-dist / 0.4) + 1e-4 * np.eye(n)  # correlated noise
    y = 2.0 * np.exp(-0.5 * x) + 0.3 + np.linalg.cholesky(cov) @ rng.standard_normal(n)
    popt, pcov = scipy_fit(expdecay, x, y, [1, 1, 0], sigma=cov, absolute_sigma=absolute_sigma, x_scale="jac")
    res = ours(expdecay, x, y, [1, 1, 0], sigma=cov, absolute_sigma=absolute_sigma)
    assert res.success
    assert_close(res, popt, pcov)


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
def test_robust_losses_match_scipy(data, loss):
    x, _, _, y = data
    popt, pcov = scipy_fit(expdecay, x, y, [1, 1, 0], loss=loss, f_scale=0.1, x_scale="jac")
    res = ours(expdecay, x, y, [1, 1, 0], loss=loss, f_scale=0.1)
    assert res.success, res.message
    assert res.loss == loss
    assert_close(res, popt, pcov)
    # the robust fit must not be the least-squares one (the outliers matter)
    lin = ours(expdecay, x, y, [1, 1, 0])
    assert np.max(np.abs(lin.popt - res.popt) / np.abs(res.popt)) > 1e-3


def test_multi_feature_x_matches_scipy():
    rng = np.random.default_rng(5)
    n = 300
    x = np.stack([rng.uniform(0, 5, n), rng.uniform(-1, 1, n)])
    y = np.asarray(plane_exp(x, 1.5, 0.8, 0.7)) + 0.03 * rng.standard_normal(n)
    popt, pcov = scipy_fit(plane_exp, x, y, [1, 1, 0], x_scale="jac")
    res = ours(plane_exp, x, y, [1, 1, 0])
    assert_close(res, popt, pcov)


def test_n_not_above_p_gives_inf_pcov_as_scipy():
    x = np.array([0.0, 1.0, 2.0])
    y = np.array([2.3, 1.5, 1.0])
    res = ours(expdecay, x, y, [1, 1, 0])
    assert np.all(np.isinf(res.pcov))
    assert res.success
    np.testing.assert_allclose(np.asarray(expdecay(x, *res.popt)), y, atol=1e-6)


def test_nonfinite_start_reports_status():
    x = np.linspace(-1, 1, 50)
    res = ours(lambda x, a, b: a * jnp.log(x) + b, x, np.ones(50), [1.0, 0.0], bounds=(-np.inf, np.inf))
    assert res.status == FitStatus.NONFINITE
    assert not res.success and "non-finite" in res.message


def test_nonfinite_trial_is_rejected_and_fit_recovers():
    # sqrt(b*x) is NaN for b < 0; a long first step lands there and must be retried shorter
    x = np.linspace(0.1, 5, 100)
    y = 3.0 * np.sqrt(0.02 * x)
    res = ours(lambda x, a, b: a * jnp.sqrt(b * x), x, y, [1.0, 1.0], bounds=(-np.inf, np.inf), x_scale=(1.0, 1.0))
    assert res.success, res.message
    np.testing.assert_allclose(np.asarray(res.popt[0] * np.sqrt(res.popt[1] * x)), y, rtol=1e-6)


def test_max_nfev_stops_the_loop(data):
    x, y, _, _ = data
    res = ours(expdecay, x, y, [1, 1, 0], max_nfev=3)
    assert res.status == FitStatus.MAX_NFEV and res.nfev == 3 and not res.success


def test_size_buckets_reuse_the_compiled_solver(data):
    x, y, _, _ = data
    assert bucket_size(400) == bucket_size(390) == 416
    ours(expdecay, x[:390], y[:390], [1, 1, 0])  # warm this bucket
    res = ours(expdecay, x[:395], y[:395], [1, 1, 0], ftol=1e-10)  # other n and tolerance, same bucket
    assert res.timings["compile_s"] == 0.0
    assert res.n_points == 395
    popt, _ = scipy_fit(expdecay, x[:395], y[:395], [1, 1, 0], x_scale="jac")
    np.testing.assert_allclose(res.popt, popt, rtol=1e-6)


def test_bucket_sizes_are_eighth_octaves():
    for n in [17, 100, 1000, 12345, 10**6, 10**7 + 1]:
        b = bucket_size(n)
        assert n <= b <= n * 1.125 + 1


@pytest.mark.parametrize(
    "p0, lo, hi",
    [
        ([1.0, 1.0, 0.0], [0.0, 0.6, -1.0], [3.0, 2.0, 1.0]),  # ends on a bound
        ([0.1, 4.0, 2.0], [-np.inf] * 3, [np.inf] * 3),  # far start: rejected tries on the way
    ],
)
def test_step_api_reproduces_the_compiled_loop(data, p0, lo, hi):
    """tr_init/tr_propose/tr_update driven from Python, and radius_schedule, give the
    compiled loop's iterates (the contract the streaming strategy relies on)."""
    x, y, sigma, _ = data
    lo, hi, p0 = np.array(lo), np.array(hi), jnp.array(p0)
    opts = SolverOptions(**TOL)
    ref = ours(expdecay, x, y, np.asarray(p0), sigma=sigma, bounds=(lo, hi))
    # the same data layout as run_standard (padded to the size bucket, padding masked)
    nb = bucket_size(x.size)
    xp, yp, sp = (np.pad(a, (0, nb - x.size), mode="edge") for a in (x, y, sigma))
    mask = np.arange(nb) < x.size
    neq_fn = jax.jit(lambda p: chunk_normal_eqs(expdecay, "linear", 1.0, p, xp, yp, sp, mask))
    propose = jax.jit(lambda s: tr_propose(s, lo, hi, opts))
    update = jax.jit(lambda s, pr, nq: tr_update(s, pr, nq, lo, hi, opts))
    schedule = jax.jit(lambda s: radius_schedule(s, 3, lo, hi, opts))
    state = tr_init(p0, neq_fn(p0), lo, hi, opts)
    rejections_seen = huge_rejections = 0
    for _ in range(200):
        if int(state.status) != int(FitStatus.RUNNING):
            break
        sched = schedule(state)
        assert float(sched.radius[0]) == float(state.radius)
        prop = propose(state)
        trial = neq_fn(prop.p_trial)
        nxt = update(state, prop, trial)
        if int(nxt.nit) == int(state.nit) and int(nxt.status) == int(FitStatus.RUNNING):  # rejected try
            if np.isfinite(float(trial.cost)) and float(trial.cost) >= HUGE_INCREASE * float(state.neq.cost):
                # MINPACK's shrink: the schedule (0.25 of the step) does not predict it, and
                # the streaming replay, comparing radii, proposes afresh
                huge_rejections += 1
                step_h_norm = float(np.linalg.norm(np.asarray(prop.step_h)))
                assert float(nxt.radius) == pytest.approx(HUGE_INCREASE_SHRINK * step_h_norm, rel=1e-14)
                assert float(nxt.radius) != float(sched.radius[1])
            else:
                rejections_seen += 1
                assert float(nxt.radius) == float(sched.radius[1]) and float(nxt.alpha) == float(sched.alpha[1])
                np.testing.assert_array_equal(np.asarray(propose(nxt).p_trial),
                                              np.asarray(propose(sched_at(sched, 1)).p_trial))
        state = nxt
    # same iterates; at the end (the polish at 1e-15) the stop tests compare roundoff-sized
    # numbers, so the fused loop and separate calls may stop one pass apart with another code
    assert FitStatus(int(state.status)).converged and ref.status.converged
    assert abs(int(state.nfev) - ref.nfev) <= 1 and abs(int(state.nit) - ref.nit) <= 1
    np.testing.assert_allclose(np.asarray(state.p), ref.popt, rtol=1e-12)
    if np.isinf(lo).all():
        assert rejections_seen > 0 and huge_rejections > 0  # both kinds of rejection were checked


def sched_at(stacked, i):
    return jax.tree_util.tree_map(lambda a: a[i], stacked)


def test_data_pass_tiles_and_overlap_equal_one_block(data):
    x, y, sigma, _ = data
    p = jnp.array([1.7, 0.4, 0.2])
    one = data_pass(expdecay, "cauchy", 0.3, p, x, y, sigma, x.size, tile=x.size)
    tiled = data_pass(expdecay, "cauchy", 0.3, p, x, y, sigma, x.size, tile=96)  # 400 = 4*96 + 16
    part = data_pass(expdecay, "cauchy", 0.3, p, x, y, sigma, 250, tile=96)  # padding beyond 250
    ref = chunk_normal_eqs(expdecay, "cauchy", 0.3, p, x[:250], y[:250], sigma[:250], np.ones(250, bool))
    for a, b, c, d in zip(one, tiled, part, ref):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(c), np.asarray(d), rtol=1e-12)
    assert float(tiled.count) == 400 and float(part.count) == 250


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_in_graph_jacobi_decompositions_match_lapack(p):
    """engine.small_linalg (the step's eigh and SVD for p <= 4, in-graph Jacobi): same
    values as LAPACK on random, badly scaled and rank-deficient matrices, U orthonormal where
    sigma > 0, V orthogonal, and (compiled with the engine's options) one matrix alone equals
    the same matrix under vmap bit for bit."""
    from nlsq_tasks.engine import small_linalg
    from nlsq_tasks.engine._compiler import COMPILER_OPTIONS

    rng = np.random.default_rng(p)
    mats = rng.standard_normal((40, p, p)) * 10.0 ** rng.uniform(-6, 6, (40, 1, p))
    if p > 1:
        mats[::4, :, -1] = 0.0  # a parameter without effect
        mats[1::4, :, 0] = 3.0 * mats[1::4, :, -1]  # two collinear columns
    batched = jax.jit(jax.vmap(small_linalg.svd)).lower(mats).compile(compiler_options=COMPILER_OPTIONS)
    u, s, vt = map(np.asarray, batched(mats))
    sv = np.linalg.svd(mats, compute_uv=False)
    assert np.allclose(np.sort(s, axis=1)[:, ::-1], sv, rtol=0, atol=1e-14 * sv[:, :1])
    assert np.allclose(np.einsum("kij,kj,kjl->kil", u, s, vt), mats, rtol=0, atol=1e-14 * sv[:, :1, None])
    assert np.allclose(np.einsum("kij,kil->kjl", vt, vt), np.eye(p), atol=1e-14)
    live = s > 1e-12 * sv[:, :1]
    gram_u = np.einsum("kij,kil->kjl", u, u)
    assert np.allclose(gram_u[live[:, :, None] & live[:, None, :]], np.eye(p)[None].repeat(40, 0)[live[:, :, None] & live[:, None, :]], atol=1e-12)
    g = np.einsum("kij,kil->kjl", mats, mats)
    w, v = map(np.asarray, jax.jit(jax.vmap(small_linalg.eigh))(g))
    top = np.abs(np.linalg.eigvalsh(g)).max(axis=1)
    assert np.allclose(np.sort(w, axis=1), np.linalg.eigvalsh(g), rtol=0, atol=1e-14 * top[:, None])
    assert np.allclose(np.einsum("kij,kj,klj->kil", v, w, v), g, rtol=0, atol=1e-14 * top[:, None, None])
    one = jax.jit(small_linalg.svd).lower(mats[0]).compile(compiler_options=COMPILER_OPTIONS)
    for i in range(len(mats)):
        assert all(np.array_equal(np.asarray(a), b[i]) for a, b in zip(one(mats[i]), (u, s, vt))), i


def test_unbounded_step_is_select_step_bit_for_bit(data):
    """Bounds known to be infinite while tracing (NumPy constants, as fit_batch passes them)
    take the short path of tr_propose; bounds passed as arguments take select_step. The
    proposals are the same bits, including a NaN trust-region step (NaN radius), where
    select_step falls back to the scaled Cauchy step."""
    x, y, sigma, _ = data
    lo, hi = INF3
    opts = SolverOptions(**TOL)
    neq_fn = jax.jit(lambda p: chunk_normal_eqs(expdecay, "linear", 1.0, p, x, y, sigma, np.ones(x.size, bool)))
    static = jax.jit(lambda s: tr_propose(s, lo, hi, opts))
    traced = jax.jit(lambda s, lo_, hi_: tr_propose(s, lo_, hi_, opts))
    seen_nan_step = False
    for p0 in ([1.0, 1.0, 0.0], [0.1, 4.0, 2.0], [2.0, 0.5, 0.3]):
        state = tr_init(jnp.array(p0), neq_fn(jnp.array(p0)), lo, hi, opts)
        for radius in (float(state.radius), 1e-3, 1e3, np.nan):
            s = state._replace(radius=jnp.asarray(radius))
            a, b = static(s), traced(s, jnp.asarray(lo), jnp.asarray(hi))
            for u, v in zip(a, b):
                np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
            seen_nan_step |= bool(np.isnan(radius))
    assert seen_nan_step
