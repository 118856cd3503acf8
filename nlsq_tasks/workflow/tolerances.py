"""Convergence tolerances that follow the size of the data set.

With ``n`` points the statistical error of the parameters shrinks like ``1/sqrt(n)``,
while the cost of one more iteration grows like ``n``. Very tight tolerances on huge data
buy digits far below the noise at a high price; tiny data sets are cheap to polish.
Hence seven tiers, one decade of tolerance each:

=====================  ==========  ======
tier                   points      tol
=====================  ==========  ======
TINY                   < 1e3       1e-12
SMALL                  < 1e4       1e-10
MEDIUM                 < 1e5       1e-9
LARGE                  < 1e6       1e-8
VERY_LARGE             < 1e7       1e-7
HUGE                   < 1e8       1e-6
MASSIVE                otherwise   1e-5
=====================  ==========  ======

A size exactly on a boundary belongs to the upper tier (``1_000`` points is SMALL).
QUALITY moves one tier tighter, FAST one tier looser, both clamped to the table.
"""

from __future__ import annotations

from typing import NamedTuple

from ._checks import check_int
from .goals import OptimizationGoal


class ToleranceTier(NamedTuple):
    name: str
    below: float  # upper bound on n_points (exclusive)
    tol: float


TOLERANCE_TIERS: tuple[ToleranceTier, ...] = (
    ToleranceTier("TINY", 1e3, 1e-12),
    ToleranceTier("SMALL", 1e4, 1e-10),
    ToleranceTier("MEDIUM", 1e5, 1e-9),
    ToleranceTier("LARGE", 1e6, 1e-8),
    ToleranceTier("VERY_LARGE", 1e7, 1e-7),
    ToleranceTier("HUGE", 1e8, 1e-6),
    ToleranceTier("MASSIVE", float("inf"), 1e-5),
)


def tolerance_tier(n_points: int) -> int:
    """Index into :data:`TOLERANCE_TIERS` of the tier holding ``n_points``."""
    n_points = check_int("n_points", n_points, minimum=1)
    for i, tier in enumerate(TOLERANCE_TIERS):  # bounded: seven tiers
        if n_points < tier.below:
            return i
    return len(TOLERANCE_TIERS) - 1  # unreachable: the last tier is unbounded


def calculate_adaptive_tolerances(n_points: int, goal: OptimizationGoal | str | None = None) -> dict[str, float]:
    """``{'gtol', 'ftol', 'xtol'}`` for a data set of ``n_points`` and an optional goal.

    >>> calculate_adaptive_tolerances(5_000_000)["gtol"]
    1e-07
    >>> calculate_adaptive_tolerances(5_000_000, goal=OptimizationGoal.QUALITY)["gtol"]
    1e-08
    """
    goal = OptimizationGoal.normalize(goal) if goal is not None else None
    index = tolerance_tier(n_points)
    shift = {OptimizationGoal.QUALITY: -1, OptimizationGoal.FAST: +1}.get(goal, 0)
    index = min(max(index + shift, 0), len(TOLERANCE_TIERS) - 1)
    tol = TOLERANCE_TIERS[index].tol
    return {"gtol": tol, "ftol": tol, "xtol": tol}
