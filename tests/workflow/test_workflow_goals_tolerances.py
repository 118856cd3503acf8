"""OptimizationGoal and the adaptive tolerance tiers."""

import pytest

from nlsq_tasks.workflow import OptimizationGoal, calculate_adaptive_tolerances
from nlsq_tasks.workflow.tolerances import TOLERANCE_TIERS, tolerance_tier


def test_goal_values_match_the_reference():
    assert [(g.name, g.value) for g in OptimizationGoal] == [
        ("FAST", 1), ("ROBUST", 2), ("GLOBAL", 3), ("MEMORY_EFFICIENT", 4), ("QUALITY", 5)
    ]


def test_normalize_maps_global_to_robust_only():
    assert OptimizationGoal.normalize(OptimizationGoal.GLOBAL) is OptimizationGoal.ROBUST
    for g in (OptimizationGoal.FAST, OptimizationGoal.ROBUST, OptimizationGoal.MEMORY_EFFICIENT, OptimizationGoal.QUALITY):
        assert OptimizationGoal.normalize(g) is g


@pytest.mark.parametrize("text, goal", [
    ("quality", OptimizationGoal.QUALITY),
    ("QUALITY", OptimizationGoal.QUALITY),
    ("Memory_Efficient", OptimizationGoal.MEMORY_EFFICIENT),
    ("memory-efficient", OptimizationGoal.MEMORY_EFFICIENT),
    (" fast ", OptimizationGoal.FAST),
])
def test_parse_is_case_insensitive(text, goal):
    assert OptimizationGoal.parse(text) is goal


def test_parse_unknown_lists_valid_names():
    with pytest.raises(ValueError) as e:
        OptimizationGoal.parse("qualty")
    msg = str(e.value)
    assert "'qualty'" in msg
    for name in ("fast", "robust", "global", "memory_efficient", "quality"):
        assert name in msg


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="goal"):
        OptimizationGoal.parse(5)


# (n_points, expected tolerance): every tier, and both sides of every boundary
TIER_CASES = [
    (1, 1e-12), (999, 1e-12),
    (1_000, 1e-10), (9_999, 1e-10),
    (10_000, 1e-9), (99_999, 1e-9),
    (100_000, 1e-8), (999_999, 1e-8),
    (1_000_000, 1e-7), (9_999_999, 1e-7),
    (10_000_000, 1e-6), (99_999_999, 1e-6),
    (100_000_000, 1e-5), (10**12, 1e-5),
]


@pytest.mark.parametrize("n, tol", TIER_CASES)
def test_tiers_and_boundaries(n, tol):
    assert calculate_adaptive_tolerances(n) == {"gtol": tol, "ftol": tol, "xtol": tol}


@pytest.mark.parametrize("goal", [None, OptimizationGoal.ROBUST, OptimizationGoal.GLOBAL, OptimizationGoal.MEMORY_EFFICIENT])
def test_neutral_goals_keep_the_tier(goal):
    assert calculate_adaptive_tolerances(5_000_000, goal=goal)["gtol"] == 1e-7


def test_reference_examples_quality_and_fast():
    assert calculate_adaptive_tolerances(5_000_000, goal=OptimizationGoal.QUALITY) == dict.fromkeys(("gtol", "ftol", "xtol"), 1e-8)
    assert calculate_adaptive_tolerances(5_000_000, goal=OptimizationGoal.FAST) == dict.fromkeys(("gtol", "ftol", "xtol"), 1e-6)


@pytest.mark.parametrize("n, tol", TIER_CASES)
def test_quality_one_tier_tighter_fast_one_looser_clamped(n, tol):
    i = [t.tol for t in TOLERANCE_TIERS].index(tol)
    tighter = TOLERANCE_TIERS[max(i - 1, 0)].tol
    looser = TOLERANCE_TIERS[min(i + 1, len(TOLERANCE_TIERS) - 1)].tol
    assert calculate_adaptive_tolerances(n, OptimizationGoal.QUALITY)["xtol"] == tighter
    assert calculate_adaptive_tolerances(n, OptimizationGoal.FAST)["ftol"] == looser


def test_clamping_at_both_ends():
    assert calculate_adaptive_tolerances(10, OptimizationGoal.QUALITY)["gtol"] == 1e-12
    assert calculate_adaptive_tolerances(10**9, OptimizationGoal.FAST)["gtol"] == 1e-5


def test_goal_by_name_is_accepted():
    assert calculate_adaptive_tolerances(5_000_000, goal="quality")["gtol"] == 1e-8


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-5, ValueError), (True, TypeError), ("1000", TypeError), (1e6, TypeError)])
def test_bad_n_points_names_the_argument(bad, exc):
    with pytest.raises(exc, match="n_points"):
        calculate_adaptive_tolerances(bad)


def test_bad_goal_type():
    with pytest.raises(TypeError, match="goal"):
        calculate_adaptive_tolerances(1000, goal=3)
    assert tolerance_tier(1000) == 1


def test_numpy_integers_are_integers():
    np = pytest.importorskip("numpy")
    assert calculate_adaptive_tolerances(np.int64(5_000_000))["gtol"] == 1e-7
    with pytest.raises(TypeError, match="n_points"):
        calculate_adaptive_tolerances(np.float64(5e6))
