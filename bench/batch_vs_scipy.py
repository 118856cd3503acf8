"""Many small fits: ``fit_batch`` (one compiled vmap) against a SciPy ``curve_fit`` loop,
and one small fit per call against SciPy.

Usage::

    python bench/batch_vs_scipy.py                       # 1e4 fits x 100 points; single fits at n = 100, 1000
    python bench/batch_vs_scipy.py --k 10000 --n 100 --scipy-sample 500
    python bench/batch_vs_scipy.py --only many --k 100000 1000000 --n 25 100   # the GPU section (bench/gpu_check.sh)

Model: ``a * exp(-b x) + c`` (3 parameters), each data set with its own a, b and noise
0.02; every fit starts from p0 = (1, 1, 0). Columns:

- ``many``: ``fit_batch`` wall time for all K fits (warm: the same shapes ran once
  before, so no compile), fits/s; SciPy: ``curve_fit`` (its default, ``lm`` with finite
  differences) in a Python loop over ``--scipy-sample`` of the sets, as fits/s;
  ``speed-up`` = our fits/s / SciPy's; ``agree`` the median relative difference of popt
  between the two on the sampled sets; ``conv`` how many of ours converged.
- ``single``: median wall time per call of ``nlsq_tasks.curve_fit`` and of
  ``scipy.optimize.curve_fit`` on the same data (warm), and their ratio (> 1: ours is slower).

Timings on a shared machine are noisy: run it more than once. Prints ratios measured in
one run, never absolute claims.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def data(k: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 4.0, n)
    a, b = rng.uniform(1.0, 3.0, k), rng.uniform(0.5, 2.0, k)
    y = a[:, None] * np.exp(-b[:, None] * x) + 0.5 + 0.02 * rng.standard_normal((k, n))
    return x, y


def model_jax(x, a, b, c):
    import jax.numpy as jnp

    return a * jnp.exp(-b * x) + c


def model_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def scipy_loop(x, y, sample: int):
    from scipy.optimize import curve_fit

    popt = np.full((sample, 3), np.nan)
    t = time.perf_counter()
    for i in range(sample):
        try:
            popt[i] = curve_fit(model_np, x, y[i], p0=[1.0, 1.0, 0.0])[0]
        except RuntimeError:
            pass
    return popt, time.perf_counter() - t


def bench_many(ks, ns, scipy_sample: int, repeats: int) -> None:
    import jax

    from nlsq_tasks import fit_batch

    print(f"## many fits: fit_batch vs a SciPy curve_fit loop ({jax.devices()[0].platform}, {len(jax.devices())} device(s))")
    print(f"{'K':>9} {'n':>5} {'compile s':>9} {'ours s':>8} {'ours fits/s':>12} {'scipy fits/s':>12} {'speed-up':>9} "
          f"{'agree':>8} {'conv':>9} {'block':>7}")
    for n in ns:
        for k in ks:
            x, y = data(k, n)
            t = time.perf_counter()
            first = fit_batch(model_jax, x, y, p0=[1.0, 1.0, 0.0])  # compiles this shape
            compile_s = first.timings.get("compile", float("nan"))
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                res = fit_batch(model_jax, x, y, p0=[1.0, 1.0, 0.0])
                best = min(best, time.perf_counter() - t)
            sample = min(scipy_sample, k)
            sp, sp_s = scipy_loop(x, y[:sample], sample) if sample else (None, float("nan"))
            ours_rate, sp_rate = k / best, sample / sp_s if sample else float("nan")
            if sample:
                ok = np.all(np.isfinite(sp), axis=1)
                agree = float(np.median(np.abs(res.popt[:sample][ok] - sp[ok]) / np.abs(sp[ok])))
            else:
                agree = float("nan")
            print(f"{k:>9,} {n:>5} {compile_s:>9.2f} {best:>8.3f} {ours_rate:>12,.0f} {sp_rate:>12,.0f} "
                  f"{ours_rate / sp_rate:>8.1f}x {agree:>8.1e} {int(res.success.sum()):>9,} {res.blocks['block_size']:>7}",
                  flush=True)


def bench_single(ns, repeats: int) -> None:
    from scipy.optimize import curve_fit as scipy_curve_fit

    import nlsq_tasks

    print("\n## one small fit per call: nlsq_tasks.curve_fit vs scipy.optimize.curve_fit (median of warm calls)")
    print(f"{'n':>6} {'ours ms':>9} {'scipy ms':>9} {'ours/scipy':>11}")
    for n in ns:
        x, y = data(1, n, seed=3)
        y = y[0]
        for _ in range(3):  # warm: compile, caches
            nlsq_tasks.curve_fit(model_jax, x, y, p0=[1.0, 1.0, 0.0])
            scipy_curve_fit(model_np, x, y, p0=[1.0, 1.0, 0.0])
        ours, theirs = [], []
        for _ in range(repeats):  # interleaved, so load changes hit both alike
            t = time.perf_counter()
            nlsq_tasks.curve_fit(model_jax, x, y, p0=[1.0, 1.0, 0.0])
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            scipy_curve_fit(model_np, x, y, p0=[1.0, 1.0, 0.0])
            theirs.append(time.perf_counter() - t)
        o, s = statistics.median(ours), statistics.median(theirs)
        print(f"{n:>6} {o * 1e3:>9.3f} {s * 1e3:>9.3f} {o / s:>10.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[10_000], help="numbers of fits")
    ap.add_argument("--n", type=int, nargs="+", default=[100], help="points per fit")
    ap.add_argument("--scipy-sample", type=int, default=500, help="SciPy fits timed (its rate is per fit)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--single-n", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--single-repeats", type=int, default=51)
    ap.add_argument("--only", choices=["many", "single"])
    args = ap.parse_args()
    import nlsq_tasks  # noqa: F401  (float64 on)

    if args.only != "single":
        bench_many(args.k, args.n, args.scipy_sample, args.repeats)
    if args.only != "many":
        bench_single(args.single_n, args.single_repeats)


if __name__ == "__main__":
    main()
