"""Every bad input is refused at the front door, before the solver traces anything,
with a message that names the argument, shows the value and says what is allowed."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest

from nlsq_tasks import curve_fit, fit
from nlsq_tasks._validate import FitInputError, FitTypeError, ModelEvaluationError


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


class CountingModel:
    """decay, counting how often it is called (to prove errors come before evaluation)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, a, b, c):
        self.calls += 1
        return decay(x, a, b, c)


X = np.linspace(0.0, 4.0, 50)
Y = 2.0 * np.exp(-1.3 * X) + 0.5
P0 = [1.0, 1.0, 0.0]


def refuse(exc_type, field, *fragments, call=fit, args=(decay, X, Y), **kwargs):
    """Assert the call raises ``exc_type`` for ``field`` with every fragment in its message."""
    with pytest.raises(exc_type) as info:
        call(*args, **kwargs)
    err = info.value
    assert getattr(err, "field", None) == field, (err, getattr(err, "field", None))
    for frag in fragments:
        assert frag in str(err), f"{frag!r} not in {str(err)!r}"
    return err


# -- data -----------------------------------------------------------------------------
def test_x_and_y_lengths_differ():
    refuse(FitInputError, "xdata", "49", "50", "same length", args=(decay, X[:-1], Y), p0=P0)


def test_multi_feature_x_wrong_shape_and_transposed_hint():
    X2 = np.stack([X, X])
    refuse(FitInputError, "xdata", "(k, n)", "(2, 49)", args=(decay, X2[:, :-1], Y), p0=P0)
    err = refuse(FitInputError, "xdata", "transposed", args=(decay, X2.T, Y), p0=P0)
    assert err.value == (50, 2)


def test_x_with_three_dimensions():
    refuse(FitInputError, "xdata", "(n,) or (k, n)", args=(decay, X.reshape(1, 1, 50), Y), p0=P0)


def test_y_must_be_one_dimensional():
    refuse(FitInputError, "ydata", "1-D", "(50, 1)", args=(decay, X, Y[:, None]), p0=P0)


def test_empty_data():
    refuse(FitInputError, "ydata", "empty", args=(decay, np.array([]), np.array([])), p0=P0)


def test_fewer_points_than_parameters():
    refuse(FitInputError, "ydata", "n=2", "3: a, b, c", args=(decay, X[:2], Y[:2]), p0=P0)


def test_non_numeric_data():
    refuse(FitTypeError, "ydata", "real numbers", args=(decay, X, np.array(["a"] * 50)), p0=P0)
    refuse(FitTypeError, "xdata", "complex", args=(decay, X + 1j, Y), p0=P0)


@pytest.mark.parametrize("where", ["x", "y", "sigma"])
def test_nan_or_inf_raises_and_suggests_omit(where):
    x, y, s = X.copy(), Y.copy(), np.ones_like(X)
    {"x": x, "y": y, "sigma": s}[where][7] = np.nan if where != "x" else np.inf
    name = {"x": "xdata", "y": "ydata", "sigma": "sigma"}[where]
    refuse(FitInputError, "xdata/ydata/sigma", f"{name} has 1 (first at index 7)", "nan_policy='omit'",
           args=(decay, x, y), sigma=s, p0=P0)


def test_nan_policy_raise_overrides_check_finite_false():
    y = Y.copy()
    y[3] = np.nan
    refuse(FitInputError, "xdata/ydata/sigma", "nan_policy='omit'", args=(decay, X, y), p0=P0,
           check_finite=False, nan_policy="raise")


def test_nan_policy_unknown_value():
    refuse(FitInputError, "nan_policy", "'propagate'", "'raise'", "'omit'", p0=P0, nan_policy="propagate")


def test_omit_leaving_nothing():
    refuse(FitInputError, "ydata", "nothing is left", args=(decay, X, np.full(50, np.nan)), p0=P0, nan_policy="omit")


# -- sigma ----------------------------------------------------------------------------
def test_sigma_wrong_shape():
    refuse(FitInputError, "sigma", "(n,) = (50,)", "(n, n) = (50, 50)", "got (49,)", p0=P0, sigma=np.ones(49))


def test_sigma_not_positive():
    s = np.ones(50)
    s[4] = 0.0
    refuse(FitInputError, "sigma", "> 0", "sigma[4] = 0.0", p0=P0, sigma=s)


def test_covariance_not_positive_definite():
    cov = np.eye(50)
    cov[0, 0] = -1.0
    refuse(FitInputError, "sigma", "not positive definite", p0=P0, sigma=cov)


def test_covariance_not_symmetric():
    cov = np.eye(50)
    cov[0, 1] = 0.5
    refuse(FitInputError, "sigma", "symmetric", p0=P0, sigma=cov)


# -- parameters and bounds ------------------------------------------------------------
def test_p0_wrong_length_names_the_parameters():
    err = refuse(FitInputError, "p0", "2 entries", "3 parameters (a, b, c)", p0=[1.0, 2.0])
    assert err.value == [1.0, 2.0]


def test_p0_not_finite():
    refuse(FitInputError, "p0", "parameter 'b' is nan", p0=[1.0, np.nan, 0.0])


def test_p0_outside_bounds_names_parameter_value_and_bound():
    refuse(FitInputError, "p0", "parameter 'b' = 5.0", "upper bound 2.0", "0.0 <= b <= 2.0",
           p0=[1.0, 5.0, 0.0], bounds=([0, 0, -1], [10, 2, 1]))


def test_lower_above_upper_names_parameter():
    # equal bounds hold a parameter fixed (see test_fixed_parameters.py); lower > upper is refused
    refuse(FitInputError, "bounds", "parameter 'c'", "upper bound", p0=P0, bounds=([0, 0, 2], [10, 10, 1]))
    refuse(FitInputError, "bounds", "parameter 'c'", "upper bound", p0=P0, bounds=([0, 0, 2], [10, 1, 1]))


def test_bounds_wrong_length():
    refuse(FitInputError, "bounds[0] (lower)", "3: a, b, c", "got shape (2,)", p0=P0, bounds=([0, 0], [1, 1, 1]))


def test_bounds_not_a_pair():
    refuse(FitInputError, "bounds", "(lower, upper) pair", p0=P0, bounds=(0, 1, 2))


def test_bounds_dict_unknown_parameter():
    refuse(FitInputError, "bounds", "['z']", "['a', 'b', 'c']", p0=P0, bounds={"z": (0, 1)})


def test_bounds_nan():
    refuse(FitInputError, "bounds", "lower bound of parameter 'a' is NaN", p0=P0, bounds=([np.nan, 0, 0], np.inf))


def test_variadic_model_without_p0():
    def f(x, *p):
        return p[0] * x

    refuse(FitInputError, "p0", "number of parameters", "*args", args=(f, X, Y))


# -- the model at p0 ------------------------------------------------------------------
def test_model_that_raises_is_wrapped():
    def f(x, a, b):
        raise ZeroDivisionError("boom")

    err = refuse(ModelEvaluationError, "f", "model raised ZeroDivisionError: boom", "p0=[a=1, b=2]",
                 args=(f, X, Y), p0=[1.0, 2.0])
    assert isinstance(err, ValueError)


def test_model_wrong_shape():
    def f(x, a):
        return jnp.stack([x, x])

    # the model is checked once on the whole x
    n = X.size
    refuse(ModelEvaluationError, "f", f"returned shape (2, {n})", f"expected ({n},)", args=(f, X, Y), p0=[1.0])


def test_constant_model_gets_a_hint():
    refuse(ModelEvaluationError, "f", "returned shape ()", "ones_like", args=(lambda x, a: a, X, Y), p0=[1.0])


def test_model_non_finite_at_p0():
    def f(x, a):
        return jnp.log(a - x)

    refuse(ModelEvaluationError, "p0", "not finite at p0=[a=0.2]", "point 3", args=(f, X, Y), p0=[0.2])


def test_model_written_with_numpy_that_raises_is_reported():
    """A NumPy model runs on the host (test_host_models.py); one that fails there too is reported."""
    def f(x, a):
        return np.exp(a * np.asarray(x)) + np.zeros(3)

    refuse(ModelEvaluationError, "f", "model raised ValueError", "p0=[a=1]", args=(f, X, Y), p0=[1.0])


def test_unknown_model_name():
    err = refuse(FitInputError, "f", "not a usable model", args=("no_such_model_xyz", X, Y), p0=[1.0])
    assert "no_such_model_xyz" in str(err)


# -- names: workflow, goal, method, loss, strategy, keywords --------------------------
def test_unknown_workflow_lists_presets():
    refuse(FitInputError, "workflow", "Unknown workflow 'nope'", "'auto'", "'quality'", "'standard'", p0=P0,
           workflow="nope")


def test_missing_preset_file():
    refuse(FitInputError, "workflow", "does not exist", p0=P0, workflow="/nonexistent/preset.yaml")


def test_unknown_goal_lists_goals():
    refuse(FitInputError, "goal", "Unknown goal 'fastest'", "fast", "robust", "quality", "memory_efficient", p0=P0,
           goal="fastest")


def test_unknown_method_lists_methods():
    refuse(FitInputError, "method", "'dogbox'", "'trf'", "'lm'", "'auto'", p0=P0, method="dogbox")


def test_unknown_loss_lists_losses():
    refuse(FitInputError, "loss", "'l1'", "'soft_l1'", "'huber'", "'cauchy'", "'arctan'", "'linear'", p0=P0, loss="l1")


def test_unknown_strategy():
    refuse(FitInputError, "strategy", "'gpu'", "'chunked'", "'streaming'", p0=P0, strategy="gpu")


def test_unknown_keyword_is_a_type_error_listing_valid_ones():
    err = refuse(FitTypeError, "tolerance", "'tolerance'", "ftol", "max_nfev", "nan_policy", p0=P0, tolerance=1e-6)
    assert isinstance(err, TypeError)


@pytest.mark.parametrize(
    "kw, field, fragment",
    [
        ({"ftol": -1.0}, "ftol", "0 <= ftol < 1"),
        ({"gtol": "tight"}, "gtol", "must be a number"),
        ({"ftol": 0.0, "xtol": 0.0, "gtol": 0.0}, "ftol/xtol/gtol", "machine epsilon"),
        ({"max_nfev": 0}, "max_nfev", ">= 1"),
        ({"max_nfev": 2.5}, "max_nfev", "integer"),
        ({"f_scale": 0.0}, "f_scale", "> 0"),
        ({"x_scale": [1.0, -1.0, 1.0]}, "x_scale", "> 0"),
        ({"x_scale": "auto"}, "x_scale", "'jac'"),
        ({"chunk_size": 10}, "chunk_size", ">= 1000"),
        ({"chunk_size": 10**7}, "chunk_size", "1000 to 1000000"),
        ({"n_starts": 0}, "n_starts", ">= 1"),
        ({"seed": -1}, "seed", ">= 0"),
        ({"validate": "yes"}, "validate", "True or False"),
        ({"progress": 3}, "progress", "callable"),
        ({"checkpoint": "s3://bucket/ck"}, "checkpoint", "CheckpointSink"),
        ({"memory_limit_gb": -1.0}, "memory_limit_gb", "> 0"),
    ],
)
def test_bad_option_values(kw, field, fragment):
    refuse((FitInputError, FitTypeError), field, fragment, p0=P0, **kw)


def test_lm_refuses_bounds():
    refuse(FitInputError, "method", "unconstrained", "'trf'", p0=P0, method="lm", bounds=(0, 10))


def test_covariance_cannot_be_chunked():
    refuse(FitInputError, "sigma", "strategy='standard'", "sigma (n,)", p0=P0, sigma=np.eye(50), strategy="chunked")


def test_errors_come_before_the_model_is_evaluated():
    m = CountingModel()
    for kw in ({"p0": [1.0]}, {"p0": P0, "bounds": ([1, 1, 1], [0, 0, 0])}, {"p0": P0, "loss": "l3"},
               {"p0": P0, "sigma": -np.ones(50)}, {"p0": P0, "goal": "nope"}):
        with pytest.raises((FitInputError, FitTypeError)):
            fit(m, X, Y, **kw)
    assert m.calls == 0


def test_curve_fit_refuses_the_same_inputs():
    refuse(FitInputError, "p0", "3 parameters (a, b, c)", call=curve_fit, p0=[1.0])
    refuse(FitTypeError, "bogus", "'bogus'", call=curve_fit, p0=P0, bogus=1)
    refuse(FitInputError, "method", "unconstrained", call=curve_fit, p0=P0, method="lm", bounds=([0, 0, 0], np.inf))


def test_messages_are_single_sentences_not_jax_tracebacks():
    with pytest.raises(ModelEvaluationError) as info:
        fit(lambda x, a: jnp.stack([x, x]), X, Y, p0=[1.0])
    assert not re.search(r"Traceback|jaxlib|File \"", str(info.value))
