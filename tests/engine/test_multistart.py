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


# -- finding the global minimum --------------------------------------------------------------
import jax.numpy as jnp  # noqa: E402

from nlsq_tasks.engine.options import SolverOptions  # noqa: E402
from nlsq_tasks.engine.sources import ArrayChunkSource  # noqa: E402
from nlsq_tasks.engine.multistart import run_multistart  # noqa: E402
from nlsq_tasks.engine.strategies import run_standard  # noqa: E402


def damped_sine(t, a, tau, w):
    return a * jnp.exp(-t / tau) * jnp.sin(w * t)


@pytest.fixture(scope="module")
def sine():
    rng = np.random.default_rng(2)
    t = np.linspace(0, 20, 2000)
    y = 2.0 * np.exp(-t / 10.0) * np.sin(3.0 * t) + 0.05 * rng.standard_normal(t.size)
    p0 = np.array([1.5, 6.0, 1.0])  # poor frequency guess: the fit stops in a local minimum
    # the amplitude and damping bounds keep the fit from escaping by flattening the model
    lower, upper = np.array([1.0, 5.0, 0.1]), np.array([10.0, 50.0, 10.0])
    return t, y, p0, lower, upper


def test_multistart_finds_the_global_minimum_a_single_start_misses(sine):
    t, y, p0, lower, upper = sine
    opts = SolverOptions()
    single = run_standard(damped_sine, t, y, None, p0, lower, upper, opts, ["a", "tau", "w"])
    multi = run_multistart(damped_sine, t, y, None, p0, lower, upper, opts, ["a", "tau", "w"], n_starts=16, seed=0)
    assert multi.success
    np.testing.assert_allclose(multi.popt, [2.0, 10.0, 3.0], rtol=0.05)
    assert single.cost > 10 * multi.cost, (single.popt, single.cost, multi.cost)  # the single start is stuck
    assert len(multi.starts) == 16 and multi.starts[0]["start"] == p0.tolist()
    best = min(multi.starts, key=lambda s: s["cost"])
    assert best["cost"] == pytest.approx(multi.cost, rel=1e-12)
    assert {"start", "popt", "cost", "status", "nfev"} <= set(best)
    # start 0 is p0: the batched solve reproduces the single solve from p0
    assert multi.starts[0]["cost"] == pytest.approx(single.cost, rel=1e-10)
    # the batched best result equals a plain solve from the best start
    best_start = np.array(best["start"])
    again = run_standard(damped_sine, t, y, None, best_start, lower, upper, opts, ["a", "tau", "w"])
    np.testing.assert_allclose(again.popt, multi.popt, rtol=1e-10)
    np.testing.assert_allclose(again.pcov, multi.pcov, rtol=1e-8)


def test_streaming_multistart_screens_on_a_sample_and_refines_on_all_data(sine):
    t, y, p0, lower, upper = sine
    from nlsq_tasks.engine.checkpoint import MemoryCheckpointSink

    src = ArrayChunkSource(t, y, chunk_size=500)
    sink = MemoryCheckpointSink()
    res = run_multistart(damped_sine, None, None, None, p0, lower, upper, SolverOptions(), ["a", "tau", "w"],
                         n_starts=16, seed=0, strategy="streaming", source=src, n_refine=2, screen_points=400,
                         checkpoint=sink)
    # each refinement is its own problem and checkpoints to its own location
    assert sorted(sink.children) == ["refine-0", "refine-1"] and all(c.saved for c in sink.children.values())
    assert not sink.saved and not res.extra_warnings
    assert res.strategy == "streaming" and res.success
    np.testing.assert_allclose(res.popt, [2.0, 10.0, 3.0], rtol=0.05)
    stages = [s["stage"] for s in res.starts]
    assert stages.count("full") == 2 and stages.count("screen") == 14
    with pytest.raises(ValueError, match="source"):
        run_multistart(damped_sine, t, y, None, p0, lower, upper, SolverOptions(), ["a", "tau", "w"],
                       n_starts=4, strategy="streaming")
