"""Streaming: equals the standard solver on data that fits; bad chunks give clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from _streaming_helpers import (
    NAMES,
    OPTIONS,
    Config,
    EditedSource,
    EmptySource,
    exp_decay,
    exp_problem,
    short_x,
    two_features,
    with_nan,
)

import jax.numpy as jnp

from nlsq_tasks.engine.options import SolverOptions
from nlsq_tasks.engine.sources import ArrayChunkSource
from nlsq_tasks.engine.status import FitStatus
from nlsq_tasks.engine.streaming import ChunkError, run_streaming
from nlsq_tasks.engine.strategies import run_standard


@pytest.fixture(scope="module")
def problem():
    return exp_problem()


def test_streaming_equals_standard_with_sigma_and_bounds(problem):
    x, y, sigma, p0, lower, upper = problem
    std = run_standard(exp_decay, x, y, sigma, p0, lower, upper, OPTIONS, NAMES)
    events = []
    src = ArrayChunkSource(x, y, sigma, chunk_size=1000)
    res = run_streaming(exp_decay, src, p0, lower, upper, OPTIONS, NAMES, config=Config(), progress=events.append)
    assert std.success and res.success
    assert res.status == std.status and res.nit == std.nit
    np.testing.assert_allclose(res.popt, std.popt, rtol=1e-8, atol=0)
    np.testing.assert_allclose(res.pcov, std.pcov, rtol=1e-6, atol=0)
    np.testing.assert_allclose(res.cost, std.cost, rtol=1e-10)
    assert res.stats.n_points == x.size and res.strategy == "streaming"
    # progress: one event per chunk of every pass, with the documented keys
    per_chunk = [e for e in events if e["phase"] == "pass"]
    passes = res.checkpoints["passes"]
    assert len(per_chunk) == 6 * passes
    assert set(per_chunk[0]) == {"phase", "pass", "chunk", "n_chunks", "cost", "nit"}
    assert per_chunk[-1]["chunk"] == 5 and per_chunk[-1]["n_chunks"] == 6
    # several radii per pass: a rejected step costs no pass of its own
    assert passes <= res.nfev + 1


def test_streaming_equals_standard_with_two_features_and_a_ragged_last_chunk():
    rng = np.random.default_rng(5)
    n = 3333
    x = rng.uniform(-1, 1, (2, n))
    y = 1.5 * x[0] ** 2 - 0.7 * x[1] + 0.2 * np.sin(3 * x[0] * x[1]) + 0.01 * rng.standard_normal(n)

    def model(x, a, b, c):
        return a * x[0] ** 2 + b * x[1] + c * jnp.sin(3 * x[0] * x[1])

    p0, lo, hi = np.zeros(3), np.full(3, -np.inf), np.full(3, np.inf)
    std = run_standard(model, x, y, None, p0, lo, hi, OPTIONS, NAMES)
    res = run_streaming(model, ArrayChunkSource(x, y, chunk_size=1000), p0, lo, hi, OPTIONS, NAMES)
    np.testing.assert_allclose(res.popt, std.popt, rtol=1e-8)
    np.testing.assert_allclose(res.pcov, std.pcov, rtol=1e-6)


def test_max_passes_bounds_the_run(problem):
    x, y, sigma, p0, lower, upper = problem
    res = run_streaming(exp_decay, ArrayChunkSource(x, y, sigma, chunk_size=2000), p0, lower, upper,
                        OPTIONS, NAMES, config=Config(max_passes=2))
    assert res.status == FitStatus.MAX_NFEV
    assert res.checkpoints["passes"] == 2


def test_warm_start_reaches_the_same_minimum_in_fewer_passes(problem):
    x, y, sigma, p0, lower, upper = problem
    src = ArrayChunkSource(x, y, sigma, chunk_size=1000)
    cold = run_streaming(exp_decay, src, p0, lower, upper, OPTIONS, NAMES, config=Config())
    warm = run_streaming(exp_decay, src, p0, lower, upper, OPTIONS, NAMES,
                         config=Config(warm_start=True, warm_start_points=1500))
    assert warm.success
    np.testing.assert_allclose(warm.popt, cold.popt, rtol=1e-6)
    assert warm.checkpoints["passes"] < cold.checkpoints["passes"]


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda a: EditedSource(*a, index=2, edit=two_features), r"chunk 2: x has shape \(2, 500\).*n_features=1"),
        (lambda a: EditedSource(*a, index=1, edit=with_nan(7)), r"chunk 1: y is not finite.*point 507 \(offset 7"),
        (lambda a: EditedSource(*a, index=3, edit=short_x), r"chunk 3: x holds 497 points but y holds 500"),
        (lambda a: EditedSource(*a, index=4, edit=lambda ch: None), r"yielded 2000 points in 4 chunks.*n_points=3000"),
        (lambda a: EmptySource(*a), r"yielded nothing.*n_points=3000"),
    ],
    ids=["feature-count-changes", "nan", "x-y-mismatch", "too-few-points", "empty"],
)
def test_bad_chunk_sources_name_the_chunk(make, pattern):
    x, y, sigma, p0, lower, upper = exp_problem(n=3000)
    src = make((x, y, sigma))
    src.chunk_size = 500
    with pytest.raises(ChunkError, match=pattern):
        run_streaming(exp_decay, src, p0, lower, upper, OPTIONS, NAMES)


def test_robust_loss_streaming_equals_standard(problem):
    x, y, sigma, p0, lower, upper = problem
    y = y.copy()
    y[::97] += 3.0  # outliers
    opts = SolverOptions(loss="soft_l1", f_scale=0.1)
    std = run_standard(exp_decay, x, y, sigma, p0, lower, upper, opts, NAMES)
    res = run_streaming(exp_decay, ArrayChunkSource(x, y, sigma, chunk_size=1500), p0, lower, upper, opts, NAMES)
    np.testing.assert_allclose(res.popt, std.popt, rtol=1e-8)


def test_adaptive_trials_same_iterates_fewer_trial_evaluations(problem):
    x, y, sigma, p0, lower, upper = problem
    src = ArrayChunkSource(x, y, sigma, chunk_size=1000)
    full = run_streaming(exp_decay, src, p0, lower, upper, OPTIONS, NAMES, config=Config())
    lean = run_streaming(exp_decay, src, p0, lower, upper, OPTIONS, NAMES, config=Config(adaptive_trials=True))
    np.testing.assert_array_equal(lean.popt, full.popt)
    assert lean.nfev == full.nfev and lean.nit == full.nit
    assert lean.checkpoints["trial_points_evaluated"] < full.checkpoints["trial_points_evaluated"]
    assert lean.checkpoints["passes"] >= full.checkpoints["passes"]
