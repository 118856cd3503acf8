"""Ill-conditioned problems: TSQR steps, honest covariances, the evaluation limit.

- The sum of 15 exponentials (linear in its parameters, condition number of J ~1e16)
  converges within 100 evaluations from ones(15) for every draw, as SciPy's TRF does by
  factoring J: the normal equations (condition squared) took 5,264.
- A parameter the data do not determine gets an infinite variance, an OptimizeWarning that
  names it, and a failed QUALITY check, in every strategy.
- A fit stopped by max_nfev says so in its status, warnings and report, with the gradient norm.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlsq_tasks import OptimizeWarning, fit
from nlsq_tasks.engine import normal_eqs as ne
from nlsq_tasks.engine.passes import LeastSquaresFactorPass, NormalEquationsPass, tiled_pass

from _api_cases import CHUNK, decay, decay_data  # noqa: E402


def sum15(x, *p):
    return sum(p[i] * jnp.exp(-0.1 * i * x) for i in range(15))


def sum15_data(seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, 300)
    truth = rng.uniform(0.5, 2.0, 15)
    y = sum(truth[i] * np.exp(-0.1 * i * x) for i in range(15)) + 0.01 * rng.standard_normal(x.size)
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sum_of_15_exponentials_converges_in_100_evaluations(seed):
    x, y = sum15_data(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # its parameters are not individually determined
        res = fit(sum15, x, y, p0=np.ones(15))
    assert res.success, res.message
    assert res.nfev <= 100, res.nfev
    # at the least-squares minimum of a linear model: residual ~ noise (sigma 0.01)
    assert res.rmse == pytest.approx(0.01, rel=0.2)


def test_tsqr_factor_matches_the_normal_equations_and_is_order_free():
    x, y = decay_data(n=1000)
    p = jnp.asarray([1.5, 1.1, 0.4])
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    gram = tiled_pass(NormalEquationsPass(decay, "soft_l1"), p, xs, ys, None, 1000, 1000, 0.2)
    for tile in (1000, 96):  # one block, and tiles folded with combine (last tile overlapping)
        fac = tiled_pass(LeastSquaresFactorPass(decay, "soft_l1"), p, xs, ys, None, 1000, tile, 0.2)
        np.testing.assert_allclose(fac.R.T @ fac.R, gram.JtJ, rtol=1e-10)
        np.testing.assert_allclose(fac.R.T @ fac.qtr, gram.Jtr, rtol=1e-10)
        np.testing.assert_allclose(fac.grad, gram.Jtr, rtol=1e-12)
        assert float(fac.cost) == pytest.approx(float(gram.cost), rel=1e-13)
    # the normal equations' own factor reproduces them too, and says when it cannot be trusted
    fac, ill = jax.jit(ne.gram_factor)(gram)
    np.testing.assert_allclose(fac.R.T @ fac.R, gram.JtJ, rtol=1e-10)
    assert not bool(ill)


def linear_in_a(x, a, b):
    return a * x  # b has no effect


@pytest.mark.parametrize("strategy", ["standard", "chunked", "streaming"])
def test_an_undetermined_parameter_has_infinite_variance_a_named_warning_and_a_failed_check(strategy):
    x = np.linspace(0.0, 1.0, 2500)
    y = 2.0 * x + 0.01 * np.random.default_rng(0).standard_normal(x.size)
    kw = {} if strategy == "standard" else {"chunk_size": CHUNK}
    with pytest.warns(OptimizeWarning, match=r"\['b'\] are not determined"):
        res = fit(linear_in_a, x, y, p0=[1.0, 1.0], strategy=strategy, validate=True, **kw)
    assert np.isinf(res.pcov[1, 1]) and np.isinf(res.perr[1])
    assert np.isfinite(res.pcov[0, 0]) and res.pcov[0, 0] > 0
    assert res.popt[0] == pytest.approx(2.0, rel=1e-3)
    assert any("['b']" in w for w in res.warnings)
    check = res.validation["finite_pcov"]
    assert not check.passed and "'b'" in check.detail
    assert not res.validation["condition"].passed
    assert any("['b']" in w for w in res.summary()["warnings"]) and "['b']" in res.report()


def test_collinear_parameters_are_both_undetermined():
    x = np.linspace(0.0, 1.0, 200)
    y = 3.0 * x + 0.01 * np.random.default_rng(1).standard_normal(x.size)
    with pytest.warns(OptimizeWarning, match=r"\['a', 'b'\]"):
        res = fit(lambda x, a, b: (a + b) * x, x, y, p0=[1.0, 1.0])
    assert np.all(np.isinf(np.diag(res.pcov)))


def test_a_fit_stopped_by_max_nfev_says_so_with_the_gradient_norm():
    x, y = decay_data()
    with pytest.warns(OptimizeWarning, match="evaluation limit.*gradient norm"):
        res = fit(decay, x, y, p0=[5.0, 0.1, 3.0], max_nfev=3)
    assert res.status.name == "MAX_NFEV" and not res.success
    note = next(w for w in res.warnings if "evaluation limit" in w)
    assert f"{res.grad_norm:.3g}" in note and "max_nfev=3" in note
    assert note in res.report() and note in res.summary()["warnings"]
