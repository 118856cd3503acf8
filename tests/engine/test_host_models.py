"""NumPy-written models: same front door, same FitResult, every strategy and multi-start.

A model using ``np.exp`` cannot be traced by JAX; it runs on the host through
``jax.pure_callback`` with a finite-difference Jacobian (nlsq_tasks._host_model). Its fit
must agree with the same model written with ``jnp`` (exact derivatives) and with SciPy.
"""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np
import pytest

from nlsq_tasks import fit, fit_source
from nlsq_tasks._host_model import HostFunction
from nlsq_tasks._model_prep import prepare_model
from nlsq_tasks._validate import ModelEvaluationError
from nlsq_tasks.engine.sources import ArrayChunkSource

P0 = [1.0, 1.0, 0.0]


def decay_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def decay_jnp(x, a, b, c):
    return a * jnp.exp(-b * x) + c


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 5.0, 3000)
    return x, decay_np(x, 2.0, 1.3, 0.5) + 0.02 * rng.standard_normal(x.size)


@pytest.fixture(scope="module")
def reference(data):
    x, y = data
    return fit(decay_jnp, x, y, p0=P0, ftol=1e-12, xtol=1e-12, gtol=1e-12)


@pytest.mark.parametrize("strategy", ["standard", "chunked", "streaming"])
def test_numpy_model_in_every_strategy(data, reference, strategy):
    x, y = data
    res = fit(decay_np, x, y, p0=P0, strategy=strategy, chunk_size=1000, ftol=1e-12, xtol=1e-12, gtol=1e-12)
    assert res.success and res.strategy == strategy
    # finite differences (2-point) move the optimum far less than its standard error
    np.testing.assert_allclose(res.popt, reference.popt, rtol=1e-6)
    np.testing.assert_allclose(res.pcov, reference.pcov, rtol=1e-3)
    np.testing.assert_array_equal(res.xdata, x)


def test_numpy_model_multistart(data, reference):
    x, y = data
    res = fit(decay_np, x, y, p0=[0.3, 4.0, 2.0], n_starts=4, bounds=([0, 0, -5], [10, 10, 5]))
    assert res.success and len(res.starts) == 4
    np.testing.assert_allclose(res.popt, reference.popt, rtol=1e-5)


def test_numpy_model_from_a_source(data, reference):
    x, y = data
    res = fit_source(decay_np, ArrayChunkSource(x, y, None, chunk_size=1000), p0=P0, strategy="streaming",
                     ftol=1e-12, xtol=1e-12, gtol=1e-12)
    np.testing.assert_allclose(res.popt, reference.popt, rtol=1e-6)


@pytest.mark.parametrize("jac", ["2-point", "3-point", "cs"])
def test_finite_difference_schemes(data, reference, jac):
    x, y = data
    res = fit(decay_np, x, y, p0=P0, method="trf", ftol=1e-12, xtol=1e-12, gtol=1e-12)
    from nlsq_tasks import curve_fit

    popt, _ = curve_fit(decay_np, x, y, p0=P0, jac=jac, ftol=1e-12, xtol=1e-12, gtol=1e-12)
    np.testing.assert_allclose(popt, reference.popt, rtol=1e-6)
    np.testing.assert_allclose(res.popt, reference.popt, rtol=1e-6)


def test_user_jacobian_is_used_for_a_numpy_model(data, reference):
    x, y = data
    calls = []

    def jac(x, a, b, c):
        calls.append(1)
        e = np.exp(-b * x)
        return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)

    from nlsq_tasks import curve_fit

    popt, pcov = curve_fit(decay_np, x, y, p0=P0, jac=jac, ftol=1e-12, xtol=1e-12, gtol=1e-12)
    assert len(calls) >= 2  # checked at p0, then used by the solver
    np.testing.assert_allclose(popt, reference.popt, rtol=1e-8)


def test_one_time_note_says_jnp_is_faster(data, caplog):
    import nlsq_tasks._host_model as host

    x, y = data
    host._NOTED = False
    with caplog.at_level(logging.WARNING, logger="nlsq_tasks"):
        fit(decay_np, x, y, p0=P0)
        fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=P0)
    notes = [r.message for r in caplog.records if "jax.numpy" in r.message]
    assert len(notes) == 1 and "faster" in notes[0] and "finite-difference" in notes[0]


def test_detection_wraps_numpy_and_keeps_jnp(data):
    x, _ = data
    import nlsq_tasks._host_model as host
    from nlsq_tasks._plan import resolve_model_spec

    p0 = np.array(P0)
    names = ["a", "b", "c"]
    m_np = prepare_model(resolve_model_spec(decay_np), x, p0, names, n_points=x.size)
    m_j = prepare_model(resolve_model_spec(decay_jnp), x, p0, names, n_points=x.size)
    # in-memory fits share one dispatcher per parameter count; the model is registered under a handle
    assert m_np.host_model and m_np.fn.n_params == 3
    assert isinstance(host._REGISTRY[m_np.host_handle], HostFunction)
    assert m_j.fn is decay_jnp
    # a sample of a source: the model runs as its own host function (no handle row in the source)
    m_src = prepare_model(resolve_model_spec(decay_np), x[:8], p0, names, n_points=x.size)
    assert isinstance(m_src.fn, HostFunction)


def test_numpy_model_failing_at_p0_is_reported(data):
    x, y = data

    def bad(x, a, b, c):
        return a * np.log(b - x) + c  # log of a negative number beyond x = b

    with pytest.raises(ModelEvaluationError, match="not finite at p0"):
        fit(bad, x, y, p0=P0)


def test_model_closing_over_a_full_length_array(data):
    """Checked on the whole x, not a few points: such a model works (run whole)."""
    x, y = data  # 3000 points: chunked runs 3 chunks, each evaluating the model on all points
    baseline = 0.5 * np.ones_like(x)

    def with_baseline(x, a, b):
        return a * jnp.exp(-b * x) + baseline

    def with_baseline_np(x, a, b):
        return a * np.exp(-b * x) + baseline

    for f, strategy in ((with_baseline, "standard"), (with_baseline, "chunked"), (with_baseline_np, "standard")):
        res = fit(f, x, y, p0=[1.0, 1.0], strategy=strategy, chunk_size=1000)
        np.testing.assert_allclose(res.popt, [2.0, 1.3], rtol=2e-2)
        np.testing.assert_array_equal(res.xdata, x)


def test_non_pointwise_model_from_a_source_says_why(data):
    x, y = data
    baseline = 0.5 * np.ones_like(x)

    def with_baseline(x, a, b):
        return a * jnp.exp(-b * x) + baseline

    with pytest.raises(ModelEvaluationError):
        fit_source(with_baseline, ArrayChunkSource(x, y, None, chunk_size=1000), p0=[1.0, 1.0], strategy="streaming")


def test_numpy_model_with_several_devices_runs_on_one():
    """Host callbacks inside a sharded program would wait on each other (XLA aborts); the plan
    puts a NumPy model on one device and says why. A subprocess: the device count is fixed
    when JAX starts."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, numpy as np\n"
        "from nlsq_tasks import fit\n"
        "x = np.linspace(0, 4, 40000); y = 2.5 * np.exp(-1.3 * x) + 0.5\n"
        "r = fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1, 1, 0])\n"
        "print(json.dumps({'popt': r.popt.tolist(), 'execution': r.summary()['execution']}))\n"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["popt"], [2.5, 1.3, 0.5], rtol=1e-6)
    assert out["execution"]["n_devices"] == 1 and not out["execution"]["sharded"]
    assert "NumPy model" in out["execution"]["reason"]
