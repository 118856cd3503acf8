"""Small fits with a NumPy-written model (host callback + finite differences) against the
same model in jnp (compiled, exact derivatives) and against SciPy's curve_fit.

Usage::

    python bench/numpy_model_vs_jnp.py                  # n = 100, 1000, 10000
    python bench/numpy_model_vs_jnp.py --sizes 1000 --repeats 9

For each n, on y = 2 exp(-1.3 x) + 0.5 + noise with p0 given, the columns are:

- ``first np s``, ``first jnp s``: the first ``curve_fit`` at this size of the NumPy and of the
  jnp model (each compiles its solver for this size bucket; later NumPy models reuse the
  NumPy one);
- ``np s``, ``jnp s``, ``scipy s``: warm medians of ``nlsq_tasks.curve_fit`` with the NumPy
  model, with the jnp model, and of ``scipy.optimize.curve_fit(method='trf')`` (its default
  2-point Jacobian, as ours for the NumPy model);
- ``new np s``: a *different* NumPy model (a fresh lambda each call, as in a loop): it must
  not recompile;
- ratios: ``np/jnp`` (the price of the host callback) and ``scipy/np`` (> 1: ours is faster).

Timings on a shared machine are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import jax.numpy as jnp
    import numpy as np
    from scipy.optimize import curve_fit as scipy_curve_fit

    from nlsq_tasks import curve_fit

    def model_np(x, a, b, c):
        return a * np.exp(-b * x) + c

    def model_jnp(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    def timed(call):
        t = time.perf_counter()
        out = call()
        return time.perf_counter() - t, out

    def median_time(call, repeats):
        call()  # warm
        return statistics.median(timed(call)[0] for _ in range(max(1, repeats)))  # bounded by --repeats

    print(f"{'n':>7} {'first np s':>11} {'first jnp s':>12} {'np s':>8} {'new np s':>9} {'jnp s':>8} {'scipy s':>8} {'np/jnp':>7} {'scipy/np':>9}")
    for n in args.sizes:
        rng = np.random.default_rng(0)
        x = np.linspace(0.0, 5.0, n)
        y = model_np(x, 2.0, 1.3, 0.5) + 0.05 * rng.standard_normal(n)
        p0 = [1.0, 1.0, 0.0]
        first, out = timed(lambda: curve_fit(model_np, x, y, p0=p0))
        first_jnp, _ = timed(lambda: curve_fit(model_jnp, x, y, p0=p0))
        ref, _ = scipy_curve_fit(model_np, x, y, p0=p0, method="trf")
        assert np.allclose(out[0], ref, rtol=1e-5), (out[0], ref)
        t_np = median_time(lambda: curve_fit(model_np, x, y, p0=p0), args.repeats)
        t_new = median_time(lambda: curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=p0), args.repeats)
        t_jnp = median_time(lambda: curve_fit(model_jnp, x, y, p0=p0), args.repeats)
        t_scipy = median_time(lambda: scipy_curve_fit(model_np, x, y, p0=p0, method="trf"), args.repeats)
        print(f"{n:>7,d} {first:>11.3f} {first_jnp:>12.3f} {t_np:>8.4f} {t_new:>9.4f} {t_jnp:>8.4f} {t_scipy:>8.4f} "
              f"{t_np / t_jnp:>7.2f} {t_scipy / t_np:>9.2f}")


if __name__ == "__main__":
    main()
