"""Choosing a strategy from the memory budget.

Decision tree (``threshold = safety_factor * available``):

1. ``data_gb > threshold``  -> STREAMING: the data themselves do not fit;
2. ``peak_gb > threshold``  -> CHUNKED: the data fit, the full Jacobian does not;
3. otherwise                -> STANDARD.

The decision is :func:`decide_strategy`, a pure function of explicit numbers (no probing of
the machine), so it can be tested and explained; :class:`MemoryBudgetSelector` only adds
the machine probe and logging, and keeps the last decision so its reason can travel with
the fit result.

Chunk sizes. A chunk of ``m`` points costs ``m * c`` bytes while it is processed:

- chunked:   ``c = (1.3 p + 2) b`` (its Jacobian rows with temporaries, residuals at the
  current and trial parameters); the data and the solver's fixed part are already resident;
- streaming: ``c = (2 (k + 1) + 1.3 p + r + 1) b`` (the chunk's data and the read-ahead
  chunk, its Jacobian rows, the residuals at the current parameters and at the ``r``
  trial radii evaluated in the same pass).

The chunk is the largest ``m`` with ``m c <= f * room``, where ``room`` is what the threshold
leaves after the resident part and ``f`` = 1/2 (1/8 for MEMORY_EFFICIENT, which also makes
chunks smaller), rounded down to a multiple of 1000 and clamped to [1e3, 1e6].
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Union

from ._checks import check_bool, check_float, check_int
from .budget import GB, JACOBIAN_PEAK_FACTOR, RUNTIME_ALLOWANCE_BYTES, MemoryBudget, detect_available_bytes
from .configs import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, ChunkedConfig, Strategy, StreamingConfig
from .goals import OptimizationGoal

logger = logging.getLogger("nlsq_tasks.workflow")

StrategyConfig = Union[ChunkedConfig, StreamingConfig, None]

CHUNK_FRACTION = 0.5
MEMORY_EFFICIENT_CHUNK_FRACTION = 0.125
N_TRIAL_RADII = 4
WARM_START_POINTS = 100_000
CHECKPOINT_EVERY_POINTS = 10_000_000  # streaming checkpoints about every 1e7 points read
CHECKPOINT_FROM_POINTS = 100_000_000  # the MASSIVE tier streams with checkpoints on


@dataclass(frozen=True)
class StrategyDecision:
    """What was chosen, with what configuration, from which budget, and why (a sentence with the numbers)."""

    strategy: Strategy
    config: StrategyConfig
    budget: MemoryBudget
    reason: str

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy.value,
            "config": None if self.config is None else self.config.to_dict(),
            "budget": self.budget.to_dict(),
            "reason": self.reason,
        }


def chunk_size_for(
    room_bytes: float, bytes_per_point: float, goal: OptimizationGoal | None = None
) -> int:
    """Largest multiple of 1000 points whose working set fits in a fraction of ``room_bytes``,
    clamped to [MIN_CHUNK_SIZE, MAX_CHUNK_SIZE]."""
    fraction = MEMORY_EFFICIENT_CHUNK_FRACTION if goal is OptimizationGoal.MEMORY_EFFICIENT else CHUNK_FRACTION
    raw = int(max(room_bytes, 0.0) * fraction // bytes_per_point)
    return min(max(raw // 1000 * 1000, MIN_CHUNK_SIZE), MAX_CHUNK_SIZE)


def decide_strategy(
    n_points: int,
    n_params: int,
    n_features: int = 1,
    available_bytes: int | float | None = None,
    safety_factor: float = 0.75,
    dtype_bytes: int = 8,
    goal: OptimizationGoal | str | None = None,
) -> StrategyDecision:
    """Strategy, config, budget and reason for explicit numbers (pure; see the module docstring).

    ``available_bytes`` is required: this function never looks at the machine.
    """
    if available_bytes is None:
        raise TypeError("decide_strategy needs available_bytes (the free memory in bytes); it never probes the machine")
    goal = OptimizationGoal.coerce(goal)
    goal = OptimizationGoal.normalize(goal) if goal is not None else None
    budget = MemoryBudget.from_available(n_points, n_params, available_bytes, n_features, dtype_bytes, safety_factor)
    b = dtype_bytes
    threshold = available_bytes * safety_factor
    fixed = RUNTIME_ALLOWANCE_BYTES + 4 * n_params**2 * b
    where = f"threshold {_gb(budget.threshold_gb)} GB ({safety_factor:.0%} of {_gb(budget.available_gb)} GB available)"
    small = " (MEMORY_EFFICIENT: smaller chunks)" if goal is OptimizationGoal.MEMORY_EFFICIENT else ""

    if not budget.data_fits:
        per_point = (2 * (n_features + 1) + JACOBIAN_PEAK_FACTOR * n_params + N_TRIAL_RADII + 1) * b
        chunk = chunk_size_for(threshold - fixed, per_point, goal)
        config: StrategyConfig = StreamingConfig(
            chunk_size=chunk,
            enable_checkpoints=n_points >= CHECKPOINT_FROM_POINTS,
            checkpoint_every_chunks=max(1, CHECKPOINT_EVERY_POINTS // chunk),
            warm_start=True,
            warm_start_points=min(WARM_START_POINTS, n_points),
            n_trial_radii=N_TRIAL_RADII,
        )
        reason = (
            f"data {_gb(budget.data_gb)} GB > {where}: the data do not fit, "
            f"streaming in chunks of {chunk:,} points{small}"
        )
        return StrategyDecision(Strategy.STREAMING, config, budget, reason)

    if not budget.fits_in_memory:
        per_point = (JACOBIAN_PEAK_FACTOR * n_params + 2) * b
        data = n_points * (n_features + 1) * b
        chunk = chunk_size_for(threshold - data - fixed - 2 * n_points * b, per_point, goal)
        config = ChunkedConfig(chunk_size=chunk, n_chunks=math.ceil(n_points / chunk))
        reason = (
            f"peak {_gb(budget.peak_gb)} GB > {where}: the Jacobian does not fit, "
            f"chunked in chunks of {chunk:,} points{small}"
        )
        return StrategyDecision(Strategy.CHUNKED, config, budget, reason)

    reason = f"peak {_gb(budget.peak_gb)} GB <= {where}: everything fits, standard"
    return StrategyDecision(Strategy.STANDARD, None, budget, reason)


def _gb(x: float) -> str:
    return f"{x:.2f}" if x >= 0.01 else f"{x:.2g}"


class MemoryBudgetSelector:
    """Selects STREAMING, CHUNKED or STANDARD from the memory budget of this machine.

    >>> selector = MemoryBudgetSelector(safety_factor=0.75)
    >>> strategy, config = selector.select(n_points=10_000, n_params=3, memory_limit_gb=1.0)
    >>> strategy == "standard", config
    (True, None)
    >>> selector.last_decision.reason
    'peak 0.06 GB <= threshold 0.75 GB (75% of 1.00 GB available): everything fits, standard'
    """

    def __init__(self, safety_factor: float = 0.75):
        self.safety_factor = check_float("safety_factor", safety_factor, gt=0.0, le=1.0)
        self.last_decision: StrategyDecision | None = None

    def __repr__(self) -> str:
        return f"MemoryBudgetSelector(safety_factor={self.safety_factor})"

    def select(
        self,
        n_points: int,
        n_params: int,
        n_features: int = 1,
        memory_limit_gb: float | None = None,
        goal: OptimizationGoal | str | None = None,
        use_gpu: bool = False,
        verbose: bool = False,
    ) -> tuple[Strategy, StrategyConfig]:
        """``(strategy, config)`` for this data set; config is None for STANDARD.

        ``goal`` does not change the strategy (only MEMORY_EFFICIENT shrinks chunks).
        ``verbose=True`` logs the budget and the reason on logger ``nlsq_tasks.workflow``.
        The full :class:`StrategyDecision` is kept on ``self.last_decision``.
        """
        check_int("n_points", n_points, minimum=1)
        check_int("n_params", n_params, minimum=1)
        check_int("n_features", n_features, minimum=1)
        goal = OptimizationGoal.coerce(goal)
        use_gpu = check_bool("use_gpu", use_gpu)
        verbose = check_bool("verbose", verbose)
        if memory_limit_gb is not None:
            available = check_float("memory_limit_gb", memory_limit_gb, gt=0.0) * GB
        else:
            available = detect_available_bytes(use_gpu=use_gpu)
        decision = decide_strategy(
            n_points, n_params, n_features, available_bytes=available, safety_factor=self.safety_factor, goal=goal
        )
        self.last_decision = decision
        if verbose:
            b = decision.budget
            logger.info(
                "memory budget for %d points x %d params: available %.3f GB, threshold %.3f GB, "
                "data %.3f GB, jacobian %.3f GB, peak %.3f GB",
                n_points, n_params, b.available_gb, b.threshold_gb, b.data_gb, b.jacobian_gb, b.peak_gb,
            )
            logger.info("strategy %s: %s", decision.strategy.value, decision.reason)
        return decision.strategy, decision.config
