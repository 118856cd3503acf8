"""Multi-start: start generation (Sobol, LHS, search boxes) and finding a global minimum."""

from __future__ import annotations

import numpy as np
import pytest

from nlsq_tasks.engine._sobol import MAX_SOBOL_DIM, latin_hypercube, sobol
from nlsq_tasks.engine.multistart import make_starts, search_box


def test_unscrambled_sobol_matches_scipy_for_all_embedded_dimensions():
    qmc = pytest.importorskip("scipy.stats.qmc")
    ours = sobol(512, MAX_SOBOL_DIM, scramble=False)
    ref = qmc.Sobol(MAX_SOBOL_DIM, scramble=False).random(512)
    np.testing.assert_array_equal(ours, ref)


def test_scrambled_sobol_is_seeded_stratified_and_not_at_origin():
    a = sobol(64, 6, seed=3)
    np.testing.assert_array_equal(a, sobol(64, 6, seed=3))
    assert not np.array_equal(a, sobol(64, 6, seed=4))
    assert np.all((a >= 0) & (a < 1))
    assert not np.any(np.all(a == 0, axis=1))
    # a scrambled (0, m, s)-net in base 2 keeps one point in each of 64 slabs per axis
    for j in range(6):
        assert len(set((a[:, j] * 64).astype(int))) == 64


def test_lhs_one_point_per_slab():
    a = latin_hypercube(50, 4, seed=1)
    for j in range(4):
        assert sorted((a[:, j] * 50).astype(int)) == list(range(50))


def test_search_box_rules():
    p0 = np.array([2.0, 3.0, -1.0, 0.0])
    lo, hi, log = search_box(p0, [0.0, 1.0, -np.inf, -np.inf], [10.0, np.inf, np.inf, 5.0])
    np.testing.assert_allclose(lo, [0.0, 1.0, -11.0, -1.0])
    np.testing.assert_allclose(hi, [10.0, 300.0, 9.0, 1.0])
    np.testing.assert_array_equal(log, [False, True, False, False])


def test_make_starts_has_p0_first_and_stays_in_bounds():
    p0 = np.array([1.0, 0.5, 2.0])
    lower, upper = np.array([0.0, -np.inf, 0.0]), np.array([5.0, np.inf, np.inf])
    s = make_starts(p0, lower, upper, 17, seed=0)
    assert s.shape == (17, 3)
    np.testing.assert_array_equal(s[0], p0)
    assert np.all(s >= lower) and np.all(s <= upper)
    assert len({tuple(r) for r in s}) == 17
    with pytest.raises(ValueError, match="sampler"):
        make_starts(p0, lower, upper, 4, sampler="grid")
    with pytest.raises(ValueError, match="n_starts"):
        make_starts(p0, lower, upper, 0)
