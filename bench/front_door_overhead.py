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

``--stages`` (e.g. ``python bench/front_door_overhead.py --stages --sizes 100 1000``) instead
prints where the host time of a warm repeated ``curve_fit`` goes: each front-door stage is
wrapped in a timer and the loop of calls is timed in place (stages are inclusive: ``run_loop``
holds the executable; the executable is timed to completion inside the call). ``host`` is
the call's median minus the executable's.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stages", action="store_true", help="per-stage host cost of a warm repeated curve_fit")
    args = parser.parse_args()
    if args.stages:
        for n in args.sizes:
            stages(n, max(args.repeats, 200))
        return

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


def stages(n: int, calls: int) -> None:
    """Median in-place cost of each stage of a warm ``curve_fit(model, x, y, p0=[1, 1, 0])``."""
    import collections
    import functools

    import jax.numpy as jnp
    import numpy as np

    import nlsq_tasks
    from nlsq_tasks import _curve_fit, _repeat, _validate, api
    from nlsq_tasks.engine import finalize, loop, strategies
    from nlsq_tasks.engine.result import FitResult

    def model(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    x = np.linspace(0.0, 4.0, n)
    y = 2.0 * np.exp(-1.3 * x) + 0.5 + 0.02 * np.random.default_rng(0).standard_normal(n)
    spent = collections.defaultdict(list)

    def timed(owner, name, label=None):
        inner = getattr(owner, name, None)
        if inner is None:  # an older layout of the front door: that stage is not shown
            return

        @functools.wraps(inner)
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                spent[label or name].append(time.perf_counter() - t)

        setattr(owner, name, wrapper)

    for owner, name in [(_curve_fit, "resolve_model_spec"), (_validate, "check_data"), (_repeat, "plan_key"),
                        (_repeat, "reuse"), (api, "_run_arrays"), (strategies, "_lay_out_standard"),
                        (strategies, "run_loop"), (strategies, "build_result"), (finalize, "covariance"),
                        (api, "_finish"), (FitResult, "with_provenance")]:
        timed(owner, name)
    nlsq_tasks.curve_fit(model, x, y, p0=[1.0, 1.0, 0.0])  # compile, plan
    entry = next(e for k, e in loop._cache.items() if k[0] == "gram" and k[1] is model)
    executable, unpack = entry.executable, entry.unpack

    def run_to_completion(*a):
        t = time.perf_counter()
        out = executable(*a)
        out.block_until_ready()
        spent["executable"].append(time.perf_counter() - t)
        return out

    def unpack_timed(vec):
        t = time.perf_counter()
        try:
            return unpack(vec)
        finally:
            spent["fetch+unpack"].append(time.perf_counter() - t)

    entry.executable, entry.unpack = run_to_completion, unpack_timed
    try:
        for _ in range(5):
            nlsq_tasks.curve_fit(model, x, y, p0=[1.0, 1.0, 0.0])
        spent.clear()
        total = []
        for _ in range(calls):  # bounded
            t = time.perf_counter()
            nlsq_tasks.curve_fit(model, x, y, p0=[1.0, 1.0, 0.0])
            total.append(time.perf_counter() - t)
    finally:
        entry.executable, entry.unpack = executable, unpack
    us = lambda v: statistics.median(v) * 1e6  # noqa: E731
    print(f"n={n}: curve_fit {us(total):.0f} us per call; executable in place {us(spent['executable']):.0f} us; "
          f"host {us(total) - us(spent['executable']):.0f} us")
    for name, values in spent.items():
        print(f"    {name:<20} {us(values):8.1f} us")


if __name__ == "__main__":
    main()
