"""What the front door costs: fit() against run_standard() and scipy.optimize.curve_fit.

Usage::

    python bench/front_door_overhead.py                 # n = 1e4, 1e5, 1e6
    python bench/front_door_overhead.py --sizes 1000000 10000000 --repeats 7

For each size, on y = 2 exp(-1.3 x) + 0.5 + noise with p0 given (so no guess), warm
calls (the compiled solver is reused) of:

- ``engine``: ``run_standard`` directly (no validation, no routing);
- ``fit``: ``nlsq_tasks.fit`` (validation, model probe at p0, memory budget, routing, then
  ``run_standard``); ``prepare`` is its ``timings["prepare"]`` (everything before the solver);
- ``scipy``: ``scipy.optimize.curve_fit(method="trf")`` with its default finite-difference Jacobian.

Columns are medians; ``fit/engine`` > 1 is the front door's overhead, ``scipy/fit`` > 1 means
fit() is faster than SciPy. Timings on a shared 2-core machine are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import jax.numpy as jnp
    import numpy as np
    from scipy.optimize import curve_fit as scipy_curve_fit

    from nlsq_tasks import fit
    from nlsq_tasks.engine.options import SolverOptions
    from nlsq_tasks.engine.strategies import run_standard
    from nlsq_tasks.workflow import calculate_adaptive_tolerances

    def model(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    def model_np(x, a, b, c):
        return a * np.exp(-b * x) + c

    def median_time(call, repeats):
        call()  # compile / warm caches
        times = []
        for _ in range(max(1, repeats)):  # bounded by --repeats
            t = time.perf_counter()
            out = call()
            times.append(time.perf_counter() - t)
        return statistics.median(times), out

    print(f"{'n':>10} {'engine s':>10} {'fit s':>10} {'prepare s':>10} {'fit/engine':>11} {'scipy s':>10} {'scipy/fit':>10}")
    for n in args.sizes:
        rng = np.random.default_rng(0)
        x = np.linspace(0.0, 5.0, n)
        y = model_np(x, 2.0, 1.3, 0.5) + 0.05 * rng.standard_normal(n)
        p0 = np.array([1.0, 1.0, 0.0])
        tols = calculate_adaptive_tolerances(n)  # what fit() uses for workflow="auto"
        options = SolverOptions(**tols)
        lo, hi = np.full(3, -np.inf), np.full(3, np.inf)
        t_engine, _ = median_time(lambda: run_standard(model, x, y, None, p0, lo, hi, options, ["a", "b", "c"]), args.repeats)
        t_fit, res = median_time(lambda: fit(model, x, y, p0=p0), args.repeats)
        t_scipy, _ = median_time(lambda: scipy_curve_fit(model_np, x, y, p0=p0, method="trf", **tols), args.repeats)
        assert res.strategy == "standard", res.strategy_reason
        print(
            f"{n:>10,d} {t_engine:>10.4f} {t_fit:>10.4f} {res.timings['prepare']:>10.4f} "
            f"{t_fit / t_engine:>11.2f} {t_scipy:>10.4f} {t_scipy / t_fit:>10.2f}"
        )


if __name__ == "__main__":
    main()
