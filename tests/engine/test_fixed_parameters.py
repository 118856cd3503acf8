"""Fixed parameters: ``fixed={"c": 0.3}`` and equal bounds hold a parameter at its value.

The fit of the others must equal the fit of the model with that parameter written in as a
constant; the result reports every parameter, the fixed ones as fixed (lmfit's way).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from nlsq_tasks import FitResult, curve_fit, fit
from nlsq_tasks._validate import FitInputError

C = 0.3


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def decay_fixed_c(x, a, b):  # the same model with c written in
    return a * jnp.exp(-b * x) + C


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    x = np.linspace(0.0, 5.0, 400)
    return x, 2.0 * np.exp(-1.3 * x) + 0.5 + 0.02 * rng.standard_normal(x.size)


@pytest.fixture(scope="module")
def reduced(data):
    x, y = data
    return fit(decay_fixed_c, x, y, p0=[1.0, 1.0])


def check_fixed(res: FitResult, reduced: FitResult):
    assert res.param_names == ["a", "b", "c"] and res.fixed == ["c"]
    np.testing.assert_allclose(res.popt[:2], reduced.popt, rtol=1e-10)
    assert res.popt[2] == C
    np.testing.assert_allclose(res.pcov[:2, :2], reduced.pcov, rtol=1e-8)
    np.testing.assert_array_equal(res.pcov[2], 0.0)
    np.testing.assert_array_equal(res.pcov[:, 2], 0.0)
    assert res.n_params == 2  # degrees of freedom count the free parameters
    assert res.stats.dof == reduced.stats.dof


def test_fixed_dict(data, reduced):
    x, y = data
    check_fixed(fit(decay, x, y, p0=[1.0, 1.0, 0.0], fixed={"c": C}), reduced)


def test_equal_bounds_fix_a_parameter(data, reduced):
    x, y = data
    check_fixed(fit(decay, x, y, p0=[1.0, 1.0, C], bounds=([-np.inf, -np.inf, C], [np.inf, np.inf, C])), reduced)
    check_fixed(fit(decay, x, y, p0=[1.0, 1.0, C], bounds={"c": (C, C)}), reduced)


def test_fixed_by_name_holds_p0(data, reduced):
    x, y = data
    check_fixed(fit(decay, x, y, p0=[1.0, 1.0, C], fixed=["c"]), reduced)


def test_curve_fit_with_equal_bounds_and_numpy_model(data, reduced):
    """SciPy refuses equal bounds; we hold the parameter."""
    x, y = data
    popt, pcov = curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1.0, 1.0, C],
                           bounds=([0, 0, C], [10, 10, C]))
    np.testing.assert_allclose(popt[:2], reduced.popt, rtol=1e-6)
    assert popt[2] == C and np.all(pcov[2] == 0)


@pytest.mark.parametrize("strategy", ["chunked", "streaming"])
def test_fixed_in_other_strategies(data, reduced, strategy):
    x, y = data
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], fixed={"c": C}, strategy=strategy, chunk_size=1000)
    assert res.fixed == ["c"]
    np.testing.assert_allclose(res.popt[:2], reduced.popt, rtol=1e-6)


def test_fixed_with_multistart(data, reduced):
    x, y = data
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], fixed={"c": C}, n_starts=3, bounds=([0, 0, -1], [10, 10, 1]))
    np.testing.assert_allclose(res.popt[:2], reduced.popt, rtol=1e-7)
    assert res.fixed == ["c"]


def test_summary_and_report_say_fixed(data):
    x, y = data
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], fixed={"c": C})
    s = res.summary()
    assert s["params"]["c"]["fixed"] is True and s["params"]["a"]["fixed"] is False
    assert s["params"]["c"]["stderr"] == 0.0 and s["fixed"] == ["c"]
    report = res.report()
    assert "c:" in report and "(fixed)" in report
    assert not any("bound" in w for w in res.warnings)  # a fixed parameter is not "at its bound"


def test_fixed_errors(data):
    x, y = data
    with pytest.raises(FitInputError, match="unknown parameter"):
        fit(decay, x, y, p0=[1.0, 1.0, 0.0], fixed={"d": 1.0})
    with pytest.raises(FitInputError, match="every parameter"):
        fit(decay, x, y, p0=[1.0, 1.0, 0.0], fixed={"a": 1.0, "b": 1.0, "c": 1.0})
    with pytest.raises(FitInputError, match="outside its bounds"):
        fit(decay, x, y, p0=[1.0, 1.0, 0.0], fixed={"c": 5.0}, bounds=([0, 0, 0], [10, 10, 1]))
    with pytest.raises(FitInputError, match="must be finite"):
        fit(decay, x, y, p0=[1.0, 1.0, 0.0], fixed={"c": np.nan})
