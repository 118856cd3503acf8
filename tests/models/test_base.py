"""Model plumbing: callables, sums and prefixes, fingerprints, pickling, the registry."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import curve_fit

from nlsq_tasks.models import (
    Model,
    get_model,
    list_models,
    model_from_callable,
    register_model,
    resolve_model,
    unregister_model,
)

X = np.linspace(0.0, 10.0, 600)


def decay(x, amp, rate, base):
    return amp * jnp.exp(-rate * x) + base


# -- callables -----------------------------------------------------------------------------
def test_names_come_from_the_signature():
    m = model_from_callable(decay)
    assert m.param_names == ["amp", "rate", "base"] and m.name == "decay"
    np.testing.assert_allclose(np.asarray(m(X, 2.0, 0.5, 1.0)), 2.0 * np.exp(-0.5 * X) + 1.0)
    assert m.guess(X, X) is None  # a plain callable has no guesser: the front door must ask for p0
    lo, hi = m.default_bounds()
    assert np.all(lo == -np.inf) and np.all(hi == np.inf)
    assert resolve_model(decay).param_names == ["amp", "rate", "base"]
    assert model_from_callable(jax.jit(decay)).param_names == ["amp", "rate", "base"]
    assert model_from_callable(functools.partial(lambda x, s, a, b: s * (a * x + b), 2.0)).param_names == ["a", "b"]


def test_star_args_need_a_count():
    def poly(x, *c):
        return sum(ci * x**i for i, ci in enumerate(c))

    with pytest.raises(ValueError, match=r"takes only \*args.*pass n_params"):
        model_from_callable(poly)
    assert model_from_callable(poly, n_params=3).param_names == ["p0", "p1", "p2"]
    assert resolve_model(poly, params=2).param_names == ["p0", "p1"]
    assert resolve_model(poly, params=["a", "b"]).param_names == ["a", "b"]

    def mixed(x, a, *rest):
        return a * x

    assert model_from_callable(mixed).param_names == ["a"]
    assert model_from_callable(mixed, n_params=3).param_names == ["a", "p1", "p2"]


def test_bad_callables_are_clear_errors():
    with pytest.raises(ValueError, match="no parameters"):
        model_from_callable(lambda x: x)
    with pytest.raises(ValueError, match="keyword-only parameters"):
        model_from_callable(lambda x, a, *, scale: a * x * scale)
    with pytest.raises(ValueError, match="n_params=5"):
        model_from_callable(decay, n_params=5)
    with pytest.raises(TypeError, match="expected a Model, a callable"):
        resolve_model(42)
    with pytest.raises(TypeError, match="takes 3 parameters"):
        model_from_callable(decay)(X, 1.0)


def test_multi_feature_callable():
    def plane(x, a, b, c):
        return a * x[0] + b * x[1] + c

    m = model_from_callable(plane)
    xy = np.stack([X, X**2])
    np.testing.assert_allclose(np.asarray(m(xy, 1.0, 2.0, 3.0)), X + 2 * X**2 + 3)


# -- fingerprints --------------------------------------------------------------------------
def test_callable_fingerprint_follows_the_code():
    def f1(x, a):
        return a * x

    def f2(x, a):
        return a * x + 1.0

    def f3(x, a):
        return a * x

    fp = model_from_callable(f1).fingerprint()
    assert fp == model_from_callable(f1).fingerprint()
    assert fp != model_from_callable(f2).fingerprint()  # different body
    assert fp.split("#")[1] == model_from_callable(f3).fingerprint().split("#")[1]  # same code
    assert fp != model_from_callable(f3).fingerprint()  # other qualname


def test_fingerprints_are_stable_across_processes():
    code = textwrap.dedent(
        """
        import jax.numpy as jnp
        from nlsq_tasks.models import get_model, expression_model, model_from_callable
        def decay(x, amp, rate, base):
            return amp * jnp.exp(-rate * x) + base
        print(get_model("gaussian").fingerprint())
        print(expression_model("a*exp(-b*x) + c").fingerprint())
        print(model_from_callable(decay).fingerprint().split("#")[1])
        print((get_model("gaussian") + get_model("gaussian")).fingerprint())
        """
    )
    env_seed = {"PYTHONHASHSEED": "12345"}  # a different str hash seed must not matter
    import os

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env_seed}
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    from nlsq_tasks.models import expression_model

    assert lines[0] == get_model("gaussian").fingerprint()
    assert lines[1] == expression_model("a*exp(-b*x) + c").fingerprint()
    assert lines[2] == model_from_callable(decay).fingerprint().split("#")[1]
    assert lines[3] == (get_model("gaussian") + get_model("gaussian")).fingerprint()


# -- sums ----------------------------------------------------------------------------------
def test_sum_prefixes_only_colliding_components():
    s = get_model("gaussian") + get_model("gaussian") + get_model("constant")
    assert s.param_names == ["g1_amplitude", "g1_center", "g1_sigma", "g2_amplitude", "g2_center", "g2_sigma", "c"]
    assert (get_model("gaussian") + get_model("linear")).param_names == ["amplitude", "center", "sigma", "slope", "intercept"]
    p = [3.0, 3.0, 0.5, 2.0, 7.0, 0.8, 1.0]
    g = get_model("gaussian")
    expected = np.asarray(g(X, *p[0:3])) + np.asarray(g(X, *p[3:6])) + 1.0
    np.testing.assert_allclose(np.asarray(s(X, *p)), expected, rtol=1e-14)
    lo, hi = s.default_bounds()
    assert lo[2] == 0 and lo[5] == 0 and lo.shape == (7,)
    assert s.spec == "gaussian+gaussian+constant"
    assert [c.name for c in s.components] == ["gaussian", "gaussian", "constant"]
    assert sum([get_model("gaussian"), get_model("constant")]).param_names == ["amplitude", "center", "sigma", "c"]


def test_user_prefixes_are_kept_and_duplicates_refused():
    s = get_model("gaussian").with_prefix("left_") + get_model("gaussian").with_prefix("right_")
    assert s.param_names[:3] == ["left_amplitude", "left_center", "left_sigma"]
    assert s.param_names[3] == "right_amplitude"
    with pytest.raises(ValueError, match="repeated parameter names"):
        get_model("gaussian").with_prefix("p_") + get_model("gaussian").with_prefix("p_")
    with pytest.raises(ValueError, match="must start an identifier"):
        get_model("gaussian").with_prefix("1x")


def test_nested_sums_flatten_and_auto_prefixes_stay_consistent():
    g = get_model("gaussian")
    a = (g + g) + g
    b = g + (g + g)
    assert a.param_names == b.param_names and a.param_names[6] == "g3_amplitude"
    assert a.fingerprint() == b.fingerprint()


def test_sum_guess_finds_two_peaks_on_a_baseline_and_the_fit_converges():
    s = resolve_model("gaussian + gaussian + constant")
    truth = np.array([3.0, 3.0, 0.5, 2.0, 7.0, 0.8, 1.0])
    y = np.asarray(s(X, *truth)) + 0.03 * np.random.default_rng(1).standard_normal(X.size)
    p0 = s.guess(X, y)
    # The larger peak is found first, the second on the residual, the baseline last.
    np.testing.assert_allclose(p0, truth, rtol=0.25, atol=0.15)
    f = jax.jit(s.fn)
    popt, _ = curve_fit(lambda x, *p: np.asarray(f(x, *p)), X, y, p0=p0, bounds=s.default_bounds(), method="trf")
    np.testing.assert_allclose(popt, truth, rtol=0.05, atol=0.03)


def test_sum_with_a_component_without_guess_has_no_guess():
    s = get_model("gaussian") + model_from_callable(lambda x, k: k * x)
    assert s.guess(X, X) is None


def test_sum_of_expression_and_library_model():
    s = get_model("exponential") + "w*sin(x)"
    assert s.param_names == ["amplitude", "rate", "offset", "w"]
    np.testing.assert_allclose(np.asarray(s(X, 1.0, 0.5, 0.0, 2.0)), np.exp(-0.5 * X) + 2 * np.sin(X))


# -- pickling and the registry -------------------------------------------------------------
def test_library_expression_and_sum_models_pickle():
    for m in [get_model("polynomial", degree=4), resolve_model("a*x[0] + b*x[1]"),
              resolve_model("gaussian + gaussian + constant"), get_model("lorentzian").with_prefix("l_")]:
        back = pickle.loads(pickle.dumps(m))
        assert back.param_names == m.param_names and back.fingerprint() == m.fingerprint()
        fn = pickle.loads(pickle.dumps(m.fn))  # the bare function too (process pools, caches)
        assert fn == m.fn
    plain = pickle.loads(pickle.dumps(model_from_callable(decay)))  # a module-level function: by reference
    assert plain.fn is decay and plain.param_names == ["amp", "rate", "base"]
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(model_from_callable(lambda x, a: a * x))  # a lambda cannot travel; send its expression


def test_equal_specs_give_equal_functions_so_the_engine_compiles_once():
    a, b = resolve_model("a*exp(-b*x) + c"), resolve_model(" a * exp(-b*x)+c")
    assert a.fn == b.fn and hash(a.fn) == hash(b.fn) and a.fn is not b.fn
    assert resolve_model("a*exp(-b*x) - c").fn != a.fn
    s1, s2 = resolve_model("gaussian + gaussian"), resolve_model("gaussian+gaussian")
    assert s1.fn == s2.fn and hash(s1.fn) == hash(s2.fn)
    assert resolve_model("gaussian + lorentzian").fn != s1.fn
    assert get_model("gaussian").fn is get_model("gaussian").fn


def test_registry():
    try:
        m = register_model("lab_decay", decay)
        assert "lab_decay" in list_models()
        assert get_model("lab_decay") is m and resolve_model("lab_decay") is m
        assert resolve_model("lab_decay + constant").param_names == ["amp", "rate", "base", "c"]
        with pytest.raises(ValueError, match="already registered"):
            register_model("lab_decay", lambda x, a: a * x)
        register_model("lab_decay", lambda x, a: a * x, overwrite=True)
        assert get_model("lab_decay").param_names == ["a"]
        with pytest.raises(ValueError, match="built-in model name"):
            register_model("gaussian", decay)
        with pytest.raises(ValueError, match="not allowed"):
            register_model("os.path", decay)
    finally:
        unregister_model("lab_decay")
    assert "lab_decay" not in list_models()


def test_model_constructor_validates():
    with pytest.raises(ValueError, match="unique"):
        Model(decay, ["a", "a", "b"])
    with pytest.raises(ValueError, match="lower <= upper"):
        Model(decay, ["a", "b", "c"], bounds=([0, 0, 0], [1, -1, 1]))
    with pytest.raises(ValueError, match="not a valid identifier"):
        Model(decay, ["a", "b", "class"])


def test_a_callable_model_is_read_once_but_follows_changes_to_the_function():
    """model_from_callable keeps the Model of a plain function (a loop of fits does not
    read the signature again), but a changed function gives a new Model."""

    def f(x, a, b):
        return a * x + b

    first = model_from_callable(f)
    assert model_from_callable(f) is first

    def g(x, a, b, c):
        return a * x + b * c

    f.__code__ = g.__code__  # the same object, other code: other parameters, other identity
    changed = model_from_callable(f)
    assert changed.param_names == ["a", "b", "c"] and changed.fingerprint() != first.fingerprint()

    def h(x, a, *, scale=1.0):
        return scale * a * x

    kept = model_from_callable(h)
    h.__kwdefaults__["scale"] = 2.0  # changed in place: compared by value
    assert model_from_callable(h) is not kept

    def with_list(x, a, k=[1.0]):  # noqa: B006  (a default that can change in place is not kept)
        return a * x * k[0]

    assert model_from_callable(with_list) is not model_from_callable(with_list)

    def redefined(x, a):
        return a * x

    one = model_from_callable(redefined)

    def redefined(x, a):  # noqa: F811  (same name, new object)
        return a * x * x

    assert model_from_callable(redefined) is not one
