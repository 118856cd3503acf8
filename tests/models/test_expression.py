"""The expression compiler: correct numbers, parameter inference, and a hostile battery
that must be rejected without anything being executed."""

from __future__ import annotations

import ast
import builtins
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from nlsq_tasks.models import UnsafeExpressionError, expression_model, resolve_model
from nlsq_tasks.models import expression as expression_module

X = np.linspace(0.1, 3.0, 50)

# expression, parameter values in order of first appearance, the same thing in NumPy
CORRECTNESS = [
    ("a*exp(-b*x) + c", [2.0, 0.5, 1.0], lambda x, a, b, c: a * np.exp(-b * x) + c),
    ("a * x**2 + b*x - c", [1.5, -2.0, 0.3], lambda x, a, b, c: a * x**2 + b * x - c),
    ("amp / (1 + ((x - x0)/w)**2)", [3.0, 1.2, 0.4], lambda x, amp, x0, w: amp / (1 + ((x - x0) / w) ** 2)),
    ("a*sin(2*pi*f*x + phi)", [1.0, 0.7, 0.2], lambda x, a, f, phi: a * np.sin(2 * np.pi * f * x + phi)),
    ("k*log(x) + log10(x)*m + log1p(x)", [0.5, 2.0], lambda x, k, m: k * np.log(x) + np.log10(x) * m + np.log1p(x)),
    ("a*expm1(x/s)", [0.3, 2.0], lambda x, a, s: a * np.expm1(x / s)),
    ("sqrt(a*x) + cos(b*x) - tan(x/c)", [2.0, 1.0, 5.0], lambda x, a, b, c: np.sqrt(a * x) + np.cos(b * x) - np.tan(x / c)),
    ("arcsin(x/s) + arccos(x/s) + arctan(a*x)", [4.0, 2.0],
     lambda x, s, a: np.arcsin(x / s) + np.arccos(x / s) + np.arctan(a * x)),
    ("arctan2(a, x) + sinh(x/b) + cosh(x/b) + tanh(x)", [1.0, 3.0],
     lambda x, a, b: np.arctan2(a, x) + np.sinh(x / b) + np.cosh(x / b) + np.tanh(x)),
    ("abs(x - c)*sign(x - c)", [1.5], lambda x, c: np.abs(x - c) * np.sign(x - c)),
    ("minimum(a, x) + maximum(b, x)", [1.0, 2.0], lambda x, a, b: np.minimum(a, x) + np.maximum(b, x)),
    ("a*erf((x - m)/s) + erfc(x)", [2.0, 1.5, 0.5], lambda x, a, m, s: a * special.erf((x - m) / s) + special.erfc(x)),
    ("where(x < t, a, b*x)", [1.5, 10.0, 2.0], lambda x, t, a, b: np.where(x < t, a, b * x)),
    ("where(lo <= x <= hi, h, 0)", [1.0, 2.0, 3.0], lambda x, lo, hi, h: np.where((lo <= x) & (x <= hi), h, 0.0)),
    ("a*e**(-x) + -b + +c", [1.0, 2.0, 3.0], lambda x, a, b, c: a * np.e ** (-x) - b + c),
    ("a*x**-2 + b*x**0.5 + c**x", [1.0, 2.0, 1.1], lambda x, a, b, c: a * x**-2.0 + b * x**0.5 + c**x),
    ("1e-3*a*x + 2.5E2*b + 1_000*c", [1.0, 2.0, 3.0], lambda x, a, b, c: 1e-3 * a * x + 250 * b + 1000 * c),
    ("(a + b) * (x - c) / 2", [1.0, 2.0, 0.5], lambda x, a, b, c: (a + b) * (x - c) / 2),
]


@pytest.mark.parametrize("expr,params,ref", CORRECTNESS, ids=[c[0] for c in CORRECTNESS])
def test_matches_numpy(expr, params, ref):
    model = expression_model(expr)
    assert model.n_params == len(params)
    got = np.asarray(model(X, *params))
    np.testing.assert_allclose(got, ref(X, *params), rtol=1e-12, atol=1e-12)
    assert got.dtype == np.float64
    jitted = np.asarray(jax.jit(model.fn)(X, *params))
    np.testing.assert_allclose(jitted, got, rtol=1e-12, atol=1e-12)


def test_parameter_inference_follows_first_appearance():
    assert expression_model("c + b*x + a*x**2").param_names == ["c", "b", "a"]
    assert expression_model("exp(-k2*x)*A + k2*B").param_names == ["k2", "A", "B"]
    assert expression_model("amp*exp(-x/tau)*sin(w*x)").param_names == ["amp", "tau", "w"]  # x, exp, sin are not params


def test_declared_params_fix_the_order_and_reject_unknown_names():
    m = expression_model("a*exp(-b*x) + c", params=["c", "b", "a"])
    assert m.param_names == ["c", "b", "a"]
    np.testing.assert_allclose(np.asarray(m(X, 1.0, 0.5, 2.0)), 2.0 * np.exp(-0.5 * X) + 1.0)
    with pytest.raises(UnsafeExpressionError, match=r"unknown name .*'d' at column 17"):
        expression_model("a*exp(-b*x) + c*d", params=["a", "b", "c"])
    with pytest.raises(ValueError, match="params: 'exp' is not allowed"):
        expression_model("exp*x", params=["exp"])


def test_custom_independent_variable_and_multi_feature_x():
    m = expression_model("a*exp(-t/tau)", independent="t")
    assert m.param_names == ["a", "tau"]
    xy = np.stack([X, 2 * X + 1])
    sub = expression_model("a*x[0] + b*x[1]**2")
    assert sub.n_features == 2 and sub.param_names == ["a", "b"]
    np.testing.assert_allclose(np.asarray(sub(xy, 2.0, 3.0)), 2.0 * xy[0] + 3.0 * xy[1] ** 2)
    named = expression_model("a*t + b*T", independent=("t", "T"))
    assert named.n_features == 2
    np.testing.assert_allclose(np.asarray(named(xy, 2.0, 3.0)), 2.0 * xy[0] + 3.0 * xy[1])
    with pytest.raises(UnsafeExpressionError, match="both bare and"):
        expression_model("a*x + b*x[1]")


def test_constant_expression_still_gives_one_value_per_point_and_grad_is_finite():
    out = expression_model("c")(X, 2.0)
    assert out.shape == X.shape
    m = expression_model("a*x**2 + b")  # integer power: exact, and no log(0) in the gradient at x = 0
    x0 = jnp.asarray([0.0, -1.0, 2.0])
    g = jax.grad(lambda p: jnp.sum(m.fn(x0, *p) ** 2))(jnp.asarray([1.0, 2.0]))
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.asarray(m(x0, 1.0, 0.0)).tolist() == [0.0, 1.0, 4.0]


def test_fingerprint_ignores_spacing_and_sees_changes():
    fp = expression_model("a*exp(-b*x)+c").fingerprint()
    assert expression_model("  a * exp( -b * x ) +  c ").fingerprint() == fp
    assert expression_model("a*exp(-b*x)+c", params=["c", "b", "a"]).fingerprint() != fp
    assert expression_model("a*exp(-b*x)-c").fingerprint() != fp


# -- the hostile battery -------------------------------------------------------------------
CANARY = {"called": 0}


def _canary(*args, **kwargs):
    CANARY["called"] += 1
    return 0


HOSTILE = [
    ("__import__('os').system('touch {marker}')", "__import__"),
    ("().__class__.__bases__[0].__subclasses__()", ".__subclasses__"),
    ("x.__class__", ".__class__"),
    ("exp.__globals__", ".__globals__"),
    ("a.__dict__", ".__dict__"),
    ("canary()", "canary"),
    ("canary", None),  # a bare unknown name becomes a parameter, never a lookup: checked below
    ("exp(canary())", "canary"),
    ("getattr(x, 'y')", "getattr"),
    ("eval('1')", "eval"),
    ("exec('1')", "exec"),
    ("open('{marker}', 'w')", "open"),
    ("lambda: canary()", "lambda"),
    ("(lambda q: q)(1)", "lambda"),
    ("[a for a in b]", "list comprehension"),
    ("{a: b for a in c}", "dict comprehension"),
    ("(a for a in b)", "generator"),
    ("'abc'", "string"),
    ("b'abc'", "bytes"),
    ("f'{canary()}'", "f-string"),
    ("(y := canary())", ":="),
    ("a if canary() else b", "conditional"),
    ("a and canary()", "and/or"),
    ("not a", "not"),
    ("~a", "~"),
    ("a @ b", "@"),
    ("a // b", "//"),
    ("a % b", "%"),
    ("a ^ 2", "**"),
    ("a << 2", "<<"),
    ("x < 1", "comparison outside where"),
    ("x in a", "in"),
    ("where(x in a, 1, 2)", "in"),
    ("exp(x=1)", "keyword"),
    ("exp(**k)", "keyword"),
    ("sin(*x)", "starred"),
    ("x[a]", "feature index"),
    ("x[0:2]", "feature index"),
    ("a[0]", "subscripts are allowed only on the independent variable"),
    ("[1, 2]", "list"),
    ("(1, 2)", "tuple"),
    ("{1}", "set"),
    ("{1: 2}", "dict"),
    ("None", "None"),
    ("True * a", "boolean"),
    ("1j * a", "complex"),
    ("...", "Ellipsis"),
    ("1e999 * a", "finite"),
    ("1" + "0" * 400 + " * a", "finite"),
    ("_hidden * x", "'_'"),
    ("a.real", ".real"),
    ("import os", "syntax"),
    ("a; canary()", "syntax"),
    ("a\n= canary()", "syntax"),
    ("x +", "syntax"),
    ("", "empty"),
    ("   ", "empty"),
    ("x + \u0435", "ASCII"),  # Cyrillic 'e'
    ("\uff45xp(x)*a", "ASCII"),  # full-width 'e' that NFKC would turn into exp
    ("a\x00", "ASCII"),
    ("x" * 2001, "limit is 2000"),
    ("(" * 300 + "a" + ")" * 300, "syntax"),  # too nested for the parser itself
    ("-" * 1500 + "a", "nesting deeper"),
    ("exp(" * 120 + "a" + ")" * 120, None),
    ("exp", "must be called"),
    ("exp(x, x)", "takes 1 argument"),
    ("where(a, b, c)", "must be a comparison"),
]


@pytest.mark.parametrize("expr,fragment", HOSTILE, ids=[repr(h[0])[:40] for h in HOSTILE])
def test_hostile_inputs_are_rejected_and_nothing_runs(expr, fragment, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    expr = expr.replace("{marker}", str(marker))
    CANARY["called"] = 0
    monkeypatch.setattr(builtins, "canary", _canary, raising=False)  # reachable only if something evaluates names
    imports = []
    real_import = builtins.__import__
    monkeypatch.setattr(
        builtins, "__import__", lambda name, *a, **k: (imports.append(name), real_import(name, *a, **k))[1]
    )
    if expr == "canary":
        m = expression_model(expr)  # just a parameter named "canary"
        assert m.param_names == ["canary"] and float(m(X, 3.0)[0]) == 3.0
    else:
        with pytest.raises(UnsafeExpressionError) as info:
            expression_model(expr)
        msg = str(info.value)
        if fragment is not None:
            assert fragment in msg, msg
        if info.value.token is not None and info.value.column is not None:
            # the message names the token and where it is
            assert repr(info.value.token) in msg and f"column {info.value.column}" in msg
    assert CANARY["called"] == 0
    assert not marker.exists()
    assert not {"os", "subprocess", "posix"} & set(imports)


def test_rejections_name_the_token_and_its_column():
    with pytest.raises(UnsafeExpressionError) as info:
        expression_model("a*exp(-b*x) + os.system(1)")
    assert info.value.token == ".system" and info.value.column == 17
    with pytest.raises(UnsafeExpressionError) as info:
        expression_model("  a*foo(x)")
    assert info.value.token == "foo" and info.value.column == 5


def test_huge_exponent_chains_are_floats_not_bigints():
    t0 = time.process_time()
    m = expression_model("a * 9**9**9**9**9 + 2**2**2**2**2**2**2 * x")
    out = np.asarray(m(X, 1.0))
    assert np.all(np.isinf(out))
    assert time.process_time() - t0 < 60  # a Python big-int evaluation of 9**9**9**9 would never return


def test_the_compiler_contains_no_dynamic_evaluation():
    """Static proof: the module never calls eval/exec/compile/__import__/getattr/globals."""
    source = Path(expression_module.__file__).read_text()
    forbidden = {"eval", "exec", "compile", "__import__", "getattr", "globals", "locals", "vars", "open"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in forbidden, node.func.id
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in {"eval", "exec", "compile", "system", "popen", "import_module"}


def test_resolve_model_reads_names_sums_and_expressions():
    assert resolve_model("a*exp(-b*x) + c").param_names == ["a", "b", "c"]
    assert resolve_model("gaussian").name == "gaussian"
    s = resolve_model("gaussian + gaussian + constant")
    assert s.param_names == ["g1_amplitude", "g1_center", "g1_sigma", "g2_amplitude", "g2_center", "g2_sigma", "c"]
    assert resolve_model("a + b").param_names == ["a", "b"]  # no model names: an expression
    with pytest.raises(ValueError, match="unknown model 'gausian'"):
        resolve_model("gausian")
    with pytest.raises(UnsafeExpressionError):
        resolve_model("gaussian(x)")  # not a whitelisted function
    m = resolve_model("a*x + b", params=["b", "a"])
    assert m.param_names == ["b", "a"]
    assert math.isclose(float(m(np.array([2.0]), 1.0, 3.0)[0]), 7.0)


def test_a_long_flat_sum_is_not_deep_nesting():
    """Issue 14: a flat 300-term sum was refused as 'nesting deeper than 100 levels'. A sum
    or product chain is flat; it builds and evaluates without one Python call per term."""
    import numpy as np

    m = expression_model("+".join(f"a{i}*x" for i in range(300)))
    assert len(m.param_names) == 300
    assert float(m(np.array([2.0]), *np.ones(300))[0]) == 600.0
    assert float(expression_model("+".join(["a"] * 900))(np.array([0.0]), 1.5)[0]) == 1350.0
    assert float(expression_model("a*x - b - c + d/2*f")(np.array([2.0]), 1.0, 2.0, 3.0, 4.0, 5.0)[0]) == 7.0
