"""Per-iteration progress from inside the compiled loop (standard and chunked), without
changing the result, and without a callback in the program when nobody listens."""

import numpy as np
import jax.numpy as jnp

from nlsq_tasks import fit
from nlsq_tasks.engine.options import SolverOptions
from nlsq_tasks.engine.strategies import run_chunked, run_standard


def _model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def _data(n=3000):
    x = np.linspace(0, 10, n)
    return x, 2.0 * np.exp(-0.5 * x) + 0.3 + np.random.default_rng(3).normal(0, 0.05, n)


ARGS = (np.array([1.0, 1.0, 0.0]), np.full(3, -np.inf), np.full(3, np.inf), SolverOptions(), ["a", "b", "c"])


def test_chunked_reports_every_iteration_and_matches_the_silent_run():
    x, y = _data()
    events = []
    loud = run_chunked(_model, x, y, None, *ARGS, 1000, progress=events.append)
    quiet = run_chunked(_model, x, y, None, *ARGS, 1000)
    np.testing.assert_array_equal(loud.popt, quiet.popt)
    assert [e["nit"] for e in events] == sorted(e["nit"] for e in events)
    assert len(events) == loud.nfev and events[-1]["nit"] == loud.nit
    assert all(e["phase"] == "pass" and e["n_chunks"] == 3 for e in events)
    assert events[-1]["cost"] == float(loud.cost)


def test_standard_progress_through_the_front_door():
    x, y = _data()
    events = []
    res = fit(_model, x, y, p0=[1, 1, 0], strategy="standard", progress=events.append)
    phases = [e["phase"] for e in events]
    assert phases[0] == "start" and phases[-1] == "done" and phases.count("pass") == res.nfev


def test_a_failing_progress_callback_does_not_fail_the_fit():
    x, y = _data()

    def broken(event):
        raise RuntimeError("display went away")

    res = run_standard(_model, x, y, None, *ARGS, progress=broken)
    assert res.success
