"""The QUALITY validation pass: passes a good fit, fails bad ones with named reasons."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from _streaming_helpers import NAMES, exp_decay, exp_problem

from nlsq_tasks.engine.options import SolverOptions
from nlsq_tasks.engine.result import _json_safe
from nlsq_tasks.engine.sources import ArrayChunkSource
from nlsq_tasks.engine.strategies import run_standard
from nlsq_tasks.engine.validation import residual_pass, runs_z, validate_fit

ABS = SolverOptions(absolute_sigma=True)
CHECKS = {"convergence", "gradient", "condition", "bounds", "finite_pcov", "reduced_chi2", "residual_runs",
          "autocorrelation", "perturbed_refits"}


@pytest.fixture(scope="module")
def data():
    return exp_problem(n=4000, seed=3)


def test_runs_z_matches_the_textbook_formula():
    # + + - - + - : 4 runs, n+ = 3, n- = 3 -> mu = 4, var = 3*2/5
    z = runs_z(3, 3, 4)
    assert z == pytest.approx(0.0)
    assert runs_z(50, 50, 2) < -9  # two long runs: far too few
    assert runs_z(10, 0, 1) == -np.inf


def test_good_fit_passes_every_check(data):
    x, y, sigma, p0, lower, upper = data
    res = run_standard(exp_decay, x, y, sigma, p0, lower, upper, ABS, NAMES)
    rep = validate_fit(exp_decay, x, y, sigma, res, ABS, n_perturb=3, seed=1)
    assert rep.passed, str(rep)
    assert {c.name for c in rep.checks} == CHECKS
    assert res.validation is rep and rep.reasons == []
    assert "PASSED" in str(rep) and "[[Validation]]" in res.report()
    json.dumps(_json_safe(res.summary()))  # the report is part of the JSON summary
    assert rep["reduced_chi2"].threshold != "informational"  # absolute sigma: chi2/dof is tested


def test_wrong_model_fails_the_residual_runs_check(data):
    x, y, sigma, _, _, _ = data

    def line(x, a, b):
        return a * x + b

    inf = np.full(2, np.inf)
    res = run_standard(line, x, y, sigma, np.array([-0.1, 1.0]), -inf, inf, ABS, ["a", "b"])
    rep = validate_fit(line, x, y, sigma, res, ABS, n_perturb=1)
    assert not rep.passed
    assert not rep["residual_runs"].passed and rep["residual_runs"].value < -4
    assert not rep["autocorrelation"].passed
    assert any(r.startswith("residual_runs:") and "wrong model" in r for r in rep.reasons)
    assert not rep["reduced_chi2"].passed  # sigma is known, chi2/dof is far above 1
    assert rep["convergence"].passed  # the fit itself converged: only validation sees the problem


def test_parameter_at_bound_is_named(data):
    x, y, sigma, p0, lower, upper = data
    upper = upper.copy()
    upper[0] = 2.0  # the true amplitude is 2.5
    res = run_standard(exp_decay, x, y, sigma, np.array([1.0, 0.5, 0.0]), lower, upper, ABS, NAMES)
    rep = validate_fit(exp_decay, x, y, sigma, res, ABS, n_perturb=0)
    assert not rep["bounds"].passed and "'a'" in rep["bounds"].detail
    assert "bounds" in " ".join(rep.reasons)


def test_unconverged_fit_fails_convergence_gradient_and_refits(data):
    x, y, sigma, p0, lower, upper = data
    stopped = run_standard(exp_decay, x, y, sigma, p0, lower, upper, SolverOptions(max_nfev=2), NAMES)
    rep = validate_fit(exp_decay, x, y, sigma, stopped, SolverOptions(), n_perturb=2, runner_up=p0)
    assert not rep["convergence"].passed
    assert not rep["gradient"].passed
    assert not rep["perturbed_refits"].passed and "LOWER" in rep["perturbed_refits"].detail
    assert not rep["runner_up_refit"].passed and "LOWER" in rep["runner_up_refit"].detail


def test_out_of_core_residual_pass_equals_in_memory(data):
    x, y, sigma, p0, lower, upper = data
    res = run_standard(exp_decay, x, y, sigma, p0, lower, upper, ABS, NAMES)
    whole = residual_pass(exp_decay, ArrayChunkSource(x, y, sigma, chunk_size=x.size), res.popt)
    chunked = residual_pass(exp_decay, ArrayChunkSource(x, y, sigma, chunk_size=333), res.popt)
    for k in ("n", "n_pos", "n_neg", "runs"):
        assert whole[k] == chunked[k]
    for k in ("chi2", "lag1", "sum_r2"):
        assert chunked[k] == pytest.approx(whole[k], rel=1e-12)
    np.testing.assert_allclose(chunked["JtJ"], whole["JtJ"], rtol=1e-12)
    assert whole["chi2"] == pytest.approx(res.chi2, rel=1e-10)
    # and the full pass runs out of core (re-fits through the streaming solver)
    rep = validate_fit(exp_decay, None, None, None, res, ABS, source=ArrayChunkSource(x, y, sigma, chunk_size=1000),
                       n_perturb=1)
    assert rep.passed, str(rep)


def test_runner_up_is_the_second_best_start_on_all_the_data(data):
    from nlsq_tasks.engine.validation import _runner_up_start

    x, y, sigma, p0, lower, upper = data
    res = run_standard(exp_decay, x, y, sigma, p0, lower, upper, ABS, NAMES)
    assert _runner_up_start(res) is None  # a single-start fit has no runner-up
    res.starts = [
        {"start": [1.0, 1.0, 0.0], "cost": 5.0, "stage": "full"},
        {"start": [2.0, 1.0, 0.0], "cost": 0.1, "stage": "screen"},  # subsample cost: not comparable
        {"start": [3.0, 1.0, 0.0], "cost": 9.0, "stage": "full"},
        {"start": [4.0, 1.0, 0.0], "cost": float("inf"), "stage": "full"},
    ]
    np.testing.assert_array_equal(_runner_up_start(res), [3.0, 1.0, 0.0])
    rep = validate_fit(exp_decay, x, y, sigma, res, ABS, n_perturb=0)
    assert rep["runner_up_refit"].passed and "same minimum" in rep["runner_up_refit"].detail
