"""curve_fit() is a drop-in for scipy.optimize.curve_fit: same returns, same errors,
same numbers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

scipy_optimize = pytest.importorskip("scipy.optimize")

from nlsq_tasks import FitResult, curve_fit  # noqa: E402
from nlsq_tasks.api import OptimizeWarning  # noqa: E402

from _api_cases import TIGHT, decay, decay_data, decay_np  # noqa: E402


def decay_jac(x, a, b, c):
    e = np.exp(-b * np.asarray(x))
    return np.stack([e, -a * x * e, np.ones_like(e)], axis=1)


@pytest.fixture(scope="module")
def data():
    return decay_data(seed=11)


def test_returns_popt_and_pcov_like_scipy(data):
    x, y = data
    out = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], **TIGHT)
    assert isinstance(out, tuple) and len(out) == 2
    popt, pcov = out
    assert isinstance(popt, np.ndarray) and popt.shape == (3,)
    assert isinstance(pcov, np.ndarray) and pcov.shape == (3, 3)
    ref_popt, ref_pcov = scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], **TIGHT)
    np.testing.assert_allclose(popt, ref_popt, rtol=1e-6)
    np.testing.assert_allclose(pcov, ref_pcov, rtol=1e-4)


def test_full_output(data):
    x, y = data
    sigma = np.full_like(x, 0.05)
    popt, pcov, info, mesg, ier = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, full_output=True, **TIGHT)
    _, _, ref_info, ref_mesg, ref_ier = scipy_optimize.curve_fit(
        decay_np, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, full_output=True, method="trf", **TIGHT
    )
    assert {"nfev", "fvec", "result"} <= set(info)
    assert isinstance(info["result"], FitResult)
    assert info["nfev"] == info["result"].nfev >= 1
    # fvec: SciPy's weighted residuals (f - y) / sigma, sign included
    np.testing.assert_allclose(info["fvec"], ref_info["fvec"], rtol=1e-5, atol=1e-5)
    assert isinstance(mesg, str) and mesg.startswith("Converged")
    assert ier in (1, 2, 3, 4) and ref_ier in (1, 2, 3, 4)


def test_fvec_with_covariance_is_whitened(data):
    x, y = data[0][::12], data[1][::12]  # 209 points over the whole range
    i = np.arange(x.size)
    cov = 0.05**2 * 0.5 ** np.abs(i[:, None] - i[None, :])
    popt, pcov, info, _, _ = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=cov, full_output=True, **TIGHT)
    ref = scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], sigma=cov, full_output=True, **TIGHT)
    np.testing.assert_allclose(popt, ref[0], rtol=1e-6)
    np.testing.assert_allclose(pcov, ref[1], rtol=1e-4)
    np.testing.assert_allclose(info["fvec"], ref[2]["fvec"], rtol=1e-5, atol=1e-5)


def test_lm_without_bounds_matches_scipy_lm(data):
    x, y = data
    popt, pcov = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], method="lm", **TIGHT)
    ref_popt, ref_pcov = scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], method="lm", **TIGHT)
    np.testing.assert_allclose(popt, ref_popt, rtol=1e-6)
    np.testing.assert_allclose(pcov, ref_pcov, rtol=1e-4)


def test_lm_with_bounds_is_a_value_error_as_in_scipy(data):
    x, y = data
    with pytest.raises(ValueError):
        scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], method="lm", bounds=(0, 10))
    with pytest.raises(ValueError, match="unconstrained"):
        curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], method="lm", bounds=(0, 10))


@pytest.mark.parametrize("method", ["LM2", "simplex"])
def test_unknown_method_lists_valid(data, method):
    x, y = data
    with pytest.raises(ValueError, match="'trf'.*'lm'.*'dogbox'"):
        curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], method=method)


def test_method_names_route_to_standard(data):
    x, y = data
    for method in ("trf", "lm", "TRF"):
        *_, info, _, _ = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], method=method, full_output=True)
        assert info["result"].strategy == "standard"
    *_, info, _, _ = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], method="auto", full_output=True, memory_limit_gb=0.01)
    assert info["result"].strategy == "chunked"  # auto follows the memory budget


def test_default_p0_matches_scipy_with_and_without_bounds(data):
    x, y = data
    popt, _ = curve_fit(decay, x, y, **TIGHT)
    ref, _ = scipy_optimize.curve_fit(decay_np, x, y, **TIGHT)
    np.testing.assert_allclose(popt, ref, rtol=1e-6)
    # with bounds and no p0 SciPy starts inside the box (midpoint / one unit inside)
    bounds = ([0.0, 0.0, -np.inf], [10.0, np.inf, np.inf])
    popt, _ = curve_fit(decay, x, y, bounds=bounds, **TIGHT)
    ref, _ = scipy_optimize.curve_fit(decay_np, x, y, bounds=bounds, **TIGHT)
    np.testing.assert_allclose(popt, ref, rtol=1e-6)


def test_not_converging_raises_runtime_error_like_scipy(data):
    x, y = data
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], max_nfev=2, method="trf")
    with pytest.raises(RuntimeError, match="Optimal parameters not found: .*max_nfev"):
        curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], max_nfev=2)
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], maxfev=2)  # SciPy's leastsq spelling


def test_undetermined_covariance_warns():
    """As many points as parameters: the residual variance (hence pcov) cannot be estimated."""
    x = np.array([0.0, 1.0, 2.0])
    y = decay_np(x, 2.0, 1.3, 0.5)
    with pytest.warns(scipy_optimize.OptimizeWarning, match="Covariance of the parameters could not be estimated"):
        scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0])
    with pytest.warns(OptimizeWarning, match="Covariance of the parameters could not be estimated"):
        popt, pcov = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0])
    np.testing.assert_allclose(popt, [2.0, 1.3, 0.5], rtol=1e-6)
    assert np.all(np.isinf(pcov))


def test_nan_handling_follows_scipy(data):
    x, y = data
    y = y.copy()
    y[10] = np.nan
    with pytest.raises(ValueError, match="nan_policy='omit'"):
        curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0])
    popt, _ = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], nan_policy="omit", **TIGHT)
    ref, _ = scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], nan_policy="omit", **TIGHT)
    np.testing.assert_allclose(popt, ref, rtol=1e-6)


def test_jac_callable_is_checked_then_ad_is_used(data):
    x, y = data
    popt, _ = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], jac=decay_jac, **TIGHT)
    ref, _ = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], **TIGHT)
    np.testing.assert_array_equal(popt, ref)

    def wrong_jac(x, a, b, c):
        return 2.0 * decay_jac(x, a, b, c)

    with pytest.raises(ValueError, match="jac disagrees"):
        curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], jac=wrong_jac)
    with pytest.raises(ValueError, match=r"expected \(8, 3\)"):
        curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], jac=lambda x, a, b, c: np.ones((8, 2)))


@pytest.mark.parametrize("jac", ["2-point", "3-point", "cs"])
def test_finite_difference_jac_names_are_accepted(data, jac):
    x, y = data
    popt, _ = curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], jac=jac)
    assert popt.shape == (3,)


def test_lists_and_absolute_sigma(data):
    x, y = data
    sigma = list(np.full(x.size, 0.05))
    popt, pcov = curve_fit(decay, list(x), list(y), p0=[1.0, 1.0, 0.0], sigma=sigma, absolute_sigma=True, **TIGHT)
    ref = scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, absolute_sigma=True, **TIGHT)
    np.testing.assert_allclose(popt, ref[0], rtol=1e-6)
    np.testing.assert_allclose(pcov, ref[1], rtol=1e-4)


def test_model_default_bounds_are_not_applied(data):
    """curve_fit keeps SciPy's semantics: bounds are exactly what is passed, even for a
    built-in model that has default bounds (fit() applies those)."""
    x, y = data
    *_, info, _, _ = curve_fit("exponential", x, y, p0=[1.0, 1.0, 0.0], full_output=True)
    res = info["result"]
    assert np.all(np.isneginf(res.lower)) and np.all(np.isposinf(res.upper))
    np.testing.assert_allclose(res.popt, [2.0, 1.3, 0.5], atol=0.05)
