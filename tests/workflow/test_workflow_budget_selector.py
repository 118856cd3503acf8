"""MemoryBudget numbers, the pure decision tree, chunk sizes and the selector."""

import dataclasses
import logging
import math

import pytest

from nlsq_tasks.workflow import (
    GB,
    ChunkedConfig,
    MemoryBudget,
    MemoryBudgetSelector,
    OptimizationGoal,
    Strategy,
    StrategyDecision,
    StreamingConfig,
    decide_strategy,
)
from nlsq_tasks.workflow.budget import RUNTIME_ALLOWANCE_BYTES

MiB = 1024**2


def expected_peak_bytes(n, p, k=1, b=8):
    # The documented formula, written out independently of the implementation.
    data = n * (k + 1) * b
    jac = n * p * b
    solver = 64 * MiB + 2 * n * b + 4 * p * p * b
    return data + 1.3 * jac + solver


def test_budget_formula_numbers_10M_by_10():
    bud = MemoryBudget.from_available(10_000_000, 10, available_bytes=16 * GB)
    assert bud.data_gb == pytest.approx(160e6 / GB)
    assert bud.jacobian_gb == pytest.approx(800e6 / GB)
    assert bud.peak_gb == pytest.approx(expected_peak_bytes(10_000_000, 10) / GB)
    assert bud.peak_gb == pytest.approx(1.329, abs=1e-3)  # the reference's "~1.3 GB"
    assert bud.available_gb == 16.0 and bud.threshold_gb == 12.0
    assert RUNTIME_ALLOWANCE_BYTES == 64 * MiB


def test_budget_features_dtype_and_safety():
    bud = MemoryBudget.from_available(1_000, 3, available_bytes=2 * GB, n_features=4, dtype_bytes=4, safety_factor=0.5)
    assert bud.data_gb * GB == pytest.approx(1_000 * 5 * 4)
    assert bud.jacobian_gb * GB == pytest.approx(1_000 * 3 * 4)
    assert bud.peak_gb * GB == pytest.approx(expected_peak_bytes(1_000, 3, 4, 4))
    assert bud.threshold_gb == 1.0


def test_budget_is_frozen_and_properties():
    bud = MemoryBudget(available_gb=1.0, threshold_gb=0.75, data_gb=0.75, jacobian_gb=0.1, peak_gb=0.76)
    assert bud.data_fits and not bud.fits_in_memory
    assert MemoryBudget(1.0, 0.75, 0.1, 0.1, 0.75).fits_in_memory  # boundary: peak == threshold fits
    assert not MemoryBudget(1.0, 0.75, 0.76, 0.1, 0.9).data_fits
    with pytest.raises(dataclasses.FrozenInstanceError):
        bud.peak_gb = 0.0
    d = bud.to_dict()
    assert d["fits_in_memory"] is False and d["data_fits"] is True and d["peak_gb"] == 0.76


def test_compute_with_memory_limit_override():
    bud = MemoryBudget.compute(n_points=1_000_000, n_params=5, memory_limit_gb=8.0)
    assert bud.available_gb == 8.0 and bud.threshold_gb == 6.0 and bud.fits_in_memory


def test_compute_detects_cpu_memory():
    psutil = pytest.importorskip("psutil")
    bud = MemoryBudget.compute(n_points=1_000, n_params=2)
    # the probe reports psutil's "available" figure (it moves a little between two reads)
    assert bud.available_gb == pytest.approx(psutil.virtual_memory().available / GB, rel=0.2)
    assert bud.threshold_gb == pytest.approx(0.75 * bud.available_gb)


def test_use_gpu_without_gpu_falls_back_to_cpu_and_logs(caplog):
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is present; the fallback path is not taken")
    with caplog.at_level(logging.INFO, logger="nlsq_tasks.workflow"):
        bud = MemoryBudget.compute(n_points=1_000, n_params=2, use_gpu=True)
    assert bud.available_gb > 0
    assert any("no GPU" in r.getMessage() and r.name == "nlsq_tasks.workflow" for r in caplog.records)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(n_points=0), ValueError, "n_points"),
    (dict(n_points=-1), ValueError, "n_points"),
    (dict(n_points=True), TypeError, "n_points"),
    (dict(n_points="100"), TypeError, "n_points"),
    (dict(n_params=0), ValueError, "n_params"),
    (dict(n_params=2.0), TypeError, "n_params"),
    (dict(n_features=0), ValueError, "n_features"),
    (dict(dtype_bytes=0), ValueError, "dtype_bytes"),
    (dict(dtype_bytes=-8), ValueError, "dtype_bytes"),
    (dict(dtype_bytes="8"), TypeError, "dtype_bytes"),
    (dict(safety_factor=0.0), ValueError, "safety_factor"),
    (dict(safety_factor=1.5), ValueError, "safety_factor"),
    (dict(safety_factor=math.nan), ValueError, "safety_factor"),
    (dict(safety_factor="0.5"), TypeError, "safety_factor"),
    (dict(memory_limit_gb=0), ValueError, "memory_limit_gb"),
    (dict(memory_limit_gb=-1.0), ValueError, "memory_limit_gb"),
    (dict(memory_limit_gb="8"), TypeError, "memory_limit_gb"),
    (dict(use_gpu="yes"), TypeError, "use_gpu"),
])
def test_compute_errors_name_the_argument(kwargs, exc, name):
    args = dict(n_points=1000, n_params=3) | kwargs
    with pytest.raises(exc, match=name):
        MemoryBudget.compute(**args)


def test_safety_factor_error_states_the_range():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        MemoryBudget.compute(n_points=10, n_params=1, safety_factor=2)


# -- the pure decision ---------------------------------------------------------------------
def test_decision_standard_when_everything_fits():
    d = decide_strategy(10_000_000, 10, available_bytes=2 * GB)  # peak 1.33 GB <= 1.5 GB
    assert isinstance(d, StrategyDecision)
    assert d.strategy is Strategy.STANDARD and d.strategy == "standard" and d.config is None
    assert "peak 1.33 GB <= threshold 1.50 GB (75% of 2.00 GB available)" in d.reason


def test_decision_chunked_when_jacobian_does_not_fit():
    d = decide_strategy(10_000_000, 10, available_bytes=1 * GB)  # data 0.15 <= 0.75 < peak 1.33
    assert d.strategy == "chunked" and isinstance(d.config, ChunkedConfig)
    assert d.reason.startswith("peak 1.33 GB > threshold 0.75 GB (75% of 1.00 GB available): the Jacobian does not fit")
    assert d.config.chunk_size == 1_000_000  # plenty of room: the upper bound applies
    assert d.config.n_chunks == 10


def test_chunked_chunk_size_is_the_largest_that_fits_half_the_room():
    n, p, avail = 10_000_000, 10, 0.5 * GB
    d = decide_strategy(n, p, available_bytes=avail)
    assert d.strategy == "chunked"
    # room = threshold - data - runtime allowance - p^2 matrices - residual vectors
    room = 0.75 * avail - n * 2 * 8 - 64 * MiB - 4 * p * p * 8 - 2 * n * 8
    per_point = (1.3 * p + 2) * 8  # Jacobian rows with temporaries + two residuals
    largest = int(0.5 * room // per_point) // 1000 * 1000
    assert d.config.chunk_size == largest == 64_000
    assert d.config.n_chunks == math.ceil(n / largest)
    assert "chunks of 64,000 points" in d.reason


def test_decision_streaming_when_data_do_not_fit():
    d = decide_strategy(100_000_000, 5, n_features=2, available_bytes=2 * GB)
    # data = 1e8 * 3 * 8 = 2.24 GB > 1.5 GB
    assert d.strategy == "streaming" and isinstance(d.config, StreamingConfig)
    assert d.reason.startswith("data 2.24 GB > threshold 1.50 GB (75% of 2.00 GB available): the data do not fit")
    assert d.config.enable_checkpoints  # the MASSIVE tier streams with checkpoints
    assert d.config.warm_start and d.config.n_trial_radii == 4


def test_decision_streaming_small_data_no_checkpoints():
    d = decide_strategy(50_000_000, 5, available_bytes=0.5 * GB)
    assert d.strategy == "streaming" and not d.config.enable_checkpoints


def test_decision_tree_is_sequential_data_first():
    # data exceed the threshold while peak does too: streaming wins
    d = decide_strategy(10_000_000, 10, available_bytes=0.1 * GB)
    assert d.strategy == "streaming"
    assert d.budget.data_gb > d.budget.threshold_gb


def test_goal_does_not_change_strategy_only_chunk_size():
    plain = decide_strategy(10_000_000, 10, available_bytes=1 * GB)
    for goal in OptimizationGoal:
        d = decide_strategy(10_000_000, 10, available_bytes=1 * GB, goal=goal)
        assert d.strategy == plain.strategy
    small = decide_strategy(10_000_000, 10, available_bytes=1 * GB, goal=OptimizationGoal.MEMORY_EFFICIENT)
    assert small.config.chunk_size < plain.config.chunk_size
    assert "MEMORY_EFFICIENT" in small.reason


@pytest.mark.parametrize("available", [0.01 * GB, 0.2 * GB, 1 * GB, 64 * GB, 10_000 * GB])
@pytest.mark.parametrize("n, p", [(10**6, 3), (10**8, 50), (10**10, 2)])
def test_chunk_sizes_are_bounded(available, n, p):
    d = decide_strategy(n, p, available_bytes=available)
    if d.config is not None:
        assert 1_000 <= d.config.chunk_size <= 1_000_000


def test_tiny_memory_clamps_chunks_to_the_minimum():
    d = decide_strategy(10**9, 10, available_bytes=1 * MiB)
    assert d.strategy == "streaming" and d.config.chunk_size == 1_000


def test_decide_strategy_requires_available_bytes():
    with pytest.raises(TypeError, match="available_bytes"):
        decide_strategy(1000, 3)
    with pytest.raises(ValueError, match="available_bytes"):
        decide_strategy(1000, 3, available_bytes=-1)


def test_configs_validate_themselves():
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkedConfig(chunk_size=999)
    with pytest.raises(ValueError, match="chunk_size"):
        StreamingConfig(chunk_size=1_000_001)
    with pytest.raises(TypeError, match="warm_start"):
        StreamingConfig(chunk_size=10_000, warm_start=1)
    cfg = StreamingConfig(chunk_size=10_000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.chunk_size = 5


# -- the selector ----------------------------------------------------------------------------
def test_selector_returns_strategy_and_config_and_keeps_decision():
    sel = MemoryBudgetSelector(safety_factor=0.75)
    strategy, config = sel.select(n_points=10_000_000, n_params=10, memory_limit_gb=1.0)
    assert strategy == "chunked" and isinstance(config, ChunkedConfig)
    assert sel.last_decision == decide_strategy(10_000_000, 10, available_bytes=1 * GB)
    strategy, config = sel.select(n_points=10_000_000, n_params=10, memory_limit_gb=16.0)
    assert strategy == "standard" and config is None and sel.last_decision.strategy == "standard"
    strategy, config = sel.select(n_points=10_000_000, n_params=10, memory_limit_gb=0.1)
    assert (strategy, type(config)) == ("streaming", StreamingConfig)
    assert f"{strategy}" == "streaming"


def test_selector_safety_factor_changes_the_threshold():
    # peak 1.33 GB: fits in 2 GB at 0.75 (1.5 GB) but not at 0.5 (1.0 GB)
    assert MemoryBudgetSelector(0.75).select(10_000_000, 10, memory_limit_gb=2.0)[0] == "standard"
    assert MemoryBudgetSelector(0.5).select(10_000_000, 10, memory_limit_gb=2.0)[0] == "chunked"


def test_selector_verbose_logs_budget_and_reason(caplog):
    sel = MemoryBudgetSelector()
    with caplog.at_level(logging.INFO, logger="nlsq_tasks.workflow"):
        sel.select(10_000_000, 10, memory_limit_gb=1.0, verbose=True)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "nlsq_tasks.workflow")
    assert "threshold 0.750 GB" in text and "peak 1.329 GB" in text
    assert sel.last_decision.reason in text


def test_selector_quiet_by_default(caplog):
    with caplog.at_level(logging.INFO, logger="nlsq_tasks.workflow"):
        MemoryBudgetSelector().select(1000, 3, memory_limit_gb=1.0)
    assert not [r for r in caplog.records if r.name == "nlsq_tasks.workflow"]


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(n_points=0), ValueError, "n_points"),
    (dict(n_params=-2), ValueError, "n_params"),
    (dict(n_points=False), TypeError, "n_points"),
    (dict(memory_limit_gb=0.0), ValueError, "memory_limit_gb"),
    (dict(goal=7), TypeError, "goal"),
    (dict(goal="best"), ValueError, "goal"),
    (dict(verbose="yes"), TypeError, "verbose"),
])
def test_selector_errors_name_the_argument(kwargs, exc, name):
    args = dict(n_points=1000, n_params=3, memory_limit_gb=1.0) | kwargs
    with pytest.raises(exc, match=name):
        MemoryBudgetSelector().select(**args)


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (1.01, ValueError), ("0.75", TypeError)])
def test_selector_init_validates_safety_factor(bad, exc):
    with pytest.raises(exc, match="safety_factor"):
        MemoryBudgetSelector(safety_factor=bad)
