"""Repeated small fits reuse their plan (nlsq_tasks._repeat) and give what a fresh call gives."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from nlsq_tasks import _repeat, curve_fit, fit
from nlsq_tasks._validate import FitInputError, ModelEvaluationError


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def log_model(x, a, b):
    return a * jnp.log(b * x)


def _data(seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.1, 4.0, 80)
    return x, 2.0 * np.exp(-1.1 * x) + 0.4 + 0.02 * rng.standard_normal(80)


def _fresh(*args, **kw):
    _repeat.clear()
    return fit(*args, **kw)


def test_a_repeated_call_reuses_the_plan_and_equals_a_fresh_one():
    _repeat.clear()
    x, y0 = _data(0)
    fit(decay, x, y0, p0=[1.0, 1.0, 0.0], loss="soft_l1")
    assert len(_repeat._cache) == 1
    for seed in (1, 2):
        x, y = _data(seed)
        again = fit(decay, x, y, p0=[1.5, 0.9, 0.1], loss="soft_l1")
        assert len(_repeat._cache) == 1  # the same key: nothing planned anew
        fresh = _fresh(decay, x, y, p0=[1.5, 0.9, 0.1], loss="soft_l1")
        np.testing.assert_array_equal(again.popt, fresh.popt)
        np.testing.assert_array_equal(again.pcov, fresh.pcov)
        assert again.tolerances == fresh.tolerances and again.strategy == fresh.strategy == "standard"
    other = fit(decay, x, y, p0=[1.5, 0.9, 0.1])  # another loss: another plan
    assert other.loss == "linear" and len(_repeat._cache) == 2


def test_guess_runs_on_each_call_s_data():
    _repeat.clear()
    x, y0 = _data(3)
    fit("exponential_decay", x, y0)
    x, y = _data(4)
    again = fit("exponential_decay", x, 3.0 * y)
    fresh = _fresh("exponential_decay", x, 3.0 * y)
    np.testing.assert_array_equal(again.popt, fresh.popt)


def test_bad_starts_on_a_cached_plan_raise_the_front_door_errors():
    _repeat.clear()
    x, y = _data(5)
    curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0], bounds=([0, 0, -1], [5, 5, 1]))
    with pytest.raises(FitInputError, match="outside the bounds") as e:
        curve_fit(decay, x, y, p0=[9.0, 1.0, 0.0], bounds=([0, 0, -1], [5, 5, 1]))
    assert e.value.field == "p0"
    xs = np.linspace(1.0, 3.0, 40)
    fit(log_model, xs, np.log(xs), p0=[1.0, 1.0])
    with pytest.raises(ModelEvaluationError):
        fit(log_model, xs, np.log(xs), p0=[1.0, -1.0])  # log of negatives at the start


def test_uncacheable_calls_are_planned_in_full():
    _repeat.clear()
    x, y = _data(6)
    fit(decay, x, y, p0=[1.0, 1.0, 0.0], progress=lambda e: None)
    fit(decay, x, y, p0=[1.0, 1.0, 0.0], n_starts=2)
    y[3] = np.nan
    fit(decay, x, y, p0=[1.0, 1.0, 0.0], nan_policy="omit")
    assert len(_repeat._cache) == 0


def test_a_re_registered_model_name_is_planned_again():
    from nlsq_tasks.models.registry import register_model, unregister_model

    _repeat.clear()
    x, y = _data(7)
    try:
        register_model("repeat_test_model", lambda x, a, b: a * jnp.exp(-b * x))
        first = fit("repeat_test_model", x, y, p0=[1.0, 1.0])
        register_model("repeat_test_model", lambda x, a, b: a * jnp.exp(-b * x) + 0.4, overwrite=True)
        second = fit("repeat_test_model", x, y, p0=[1.0, 1.0])
    finally:
        unregister_model("repeat_test_model")
    assert second.chi2 < first.chi2 / 10  # the new model (with the offset) was fitted


@pytest.mark.parametrize("options", [
    {},
    {"loss": "cauchy", "f_scale": 0.1},
    {"bounds": ([0.0, 0.0, -1.0], [5.0, 3.0, 1.0]), "x_scale": [1.0, 2.0, 0.5]},
])
def test_the_third_call_equals_the_first_bit_for_bit(options):
    """From the third identical call on (the second with the solver compiled), the bounds,
    settings and f_scale are passed to the compiled solver as device arrays
    (engine.loop._DeviceConstants), the plan and the model are reused: every number of the
    result is the first call's."""
    _repeat.clear()
    x, y = _data(7)
    first, *again_and_again = (fit(decay, x, y, p0=[1.0, 1.0, 0.0], **options) for _ in range(4))
    for again in again_and_again:
        again.timings = first.timings  # wall times differ, every other field must not
        assert again == first
        np.testing.assert_array_equal(again.popt, first.popt)
        np.testing.assert_array_equal(again.pcov, first.pcov)


def test_repeated_fits_under_another_default_device_keep_numpy_arguments():
    """A solver compiled under jax.default_device, or a call made under one, does not get
    constants placed on the default device (it may run elsewhere); results are unchanged."""
    import jax

    _repeat.clear()
    x, y = _data(8)
    with jax.default_device(jax.devices()[-1]):
        inside = [fit(decay, x, y, p0=[1.0, 1.0, 0.2]) for _ in range(3)]
    outside = [fit(decay, x, y, p0=[1.0, 1.0, 0.2]) for _ in range(3)]
    for r in inside[1:] + outside:
        np.testing.assert_array_equal(r.popt, inside[0].popt)
        np.testing.assert_array_equal(r.pcov, inside[0].pcov)
