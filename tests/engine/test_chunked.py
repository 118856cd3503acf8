"""run_chunked gives run_standard's answer whatever the chunking."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import nlsq_tasks  # noqa: F401  (float64)
from nlsq_tasks.engine.options import SolverOptions
from nlsq_tasks.engine.strategies import run_chunked, run_standard

TOL = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)


def gauss_bg(x, a, mu, w, c):
    return a * jnp.exp(-0.5 * ((x - mu) / w) ** 2) + c


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(11)
    n = 1000
    x = np.sort(rng.uniform(-5, 5, n))
    sigma = 0.05 + 0.1 * rng.random(n)
    y = np.asarray(gauss_bg(x, 3.0, 0.4, 1.1, 0.5)) + sigma * rng.standard_normal(n)
    y[::53] += 2.0  # outliers, for the robust case
    return x, y, sigma


CASES = {
    "plain": dict(sigma=False, bounds=False, loss="linear"),
    "sigma": dict(sigma=True, bounds=False, loss="linear"),
    "bounds": dict(sigma=True, bounds=True, loss="linear"),
    "robust": dict(sigma=True, bounds=True, loss="huber"),
}


def _fit(runner, problem, case, **kw):
    x, y, sigma = problem
    c = CASES[case]
    p0 = np.array([1.0, 0.0, 2.0, 0.0])
    if c["bounds"]:
        lo, hi = np.array([0.0, -1.0, 0.1, 0.55]), np.array([10.0, 1.0, 5.0, 2.0])  # c pushed to a bound
        p0[3] = 1.0
    else:
        lo, hi = np.full(4, -np.inf), np.full(4, np.inf)
    opts = SolverOptions(loss=c["loss"], f_scale=0.5, **TOL)
    return runner(gauss_bg, x, y, sigma if c["sigma"] else None, p0, lo, hi, opts, ["a", "mu", "w", "c"], **kw)


@pytest.mark.parametrize(
    "case, chunk_size",
    # 1000 = 7*128 + 104 (overlapping last chunk); 4*250 (exact); 5000 (one chunk, shorter)
    [(c, k) for c in CASES for k in (128, 5000)] + [("robust", 250), ("plain", 250)],
)
def test_chunked_equals_standard(problem, case, chunk_size):
    std = _fit(run_standard, problem, case)
    chk = _fit(run_chunked, problem, case, chunk_size=chunk_size)
    assert std.success and chk.success, (std.message, chk.message)
    assert chk.strategy == "chunked" and std.strategy == "standard"
    np.testing.assert_allclose(chk.popt, std.popt, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(chk.pcov, std.pcov, rtol=1e-6, atol=1e-6 * np.abs(std.pcov).max())
    assert chk.n_points == std.n_points == 1000
    for name in ("chi2", "ssr", "sst"):
        assert getattr(chk.stats, name) == pytest.approx(getattr(std.stats, name), rel=1e-9)
    if CASES[case]["bounds"]:
        assert chk.active_bounds[3] == -1


def test_chunked_multi_feature_x():
    rng = np.random.default_rng(2)
    n = 777
    x = np.stack([rng.uniform(0, 4, n), rng.uniform(0, 1, n)])

    def fn(x, a, b, c):
        return a * jnp.exp(-b * x[0]) + c * x[1] ** 2

    y = np.asarray(fn(x, 2.0, 0.7, -1.0)) + 0.01 * rng.standard_normal(n)
    args = (x, y, None, np.array([1.0, 1.0, 0.0]), np.full(3, -np.inf), np.full(3, np.inf), SolverOptions(**TOL))
    std = run_standard(fn, *args, ["a", "b", "c"])
    chk = run_chunked(fn, *args, ["a", "b", "c"], chunk_size=100)
    np.testing.assert_allclose(chk.popt, std.popt, rtol=1e-8)
    np.testing.assert_allclose(chk.pcov, std.pcov, rtol=1e-6)


def test_chunked_refuses_a_covariance_matrix(problem):
    x, y, _ = problem
    with pytest.raises(ValueError, match="sigma"):
        run_chunked(
            gauss_bg, x, y, np.eye(x.size), np.ones(4), np.full(4, -np.inf), np.full(4, np.inf),
            SolverOptions(), list("abcd"), chunk_size=100,
        )  # fmt: skip
