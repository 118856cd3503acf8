"""run_standard against scipy.optimize.curve_fit (lm and trf) on y = 2 exp(-x/2) + 0.3 + noise.

Usage::

    python bench/standard_vs_scipy.py            # n = 1e4, 1e5, 1e6
    python bench/standard_vs_scipy.py --with-1e7 # and n = 1e7
    python bench/standard_vs_scipy.py --repeats 7 --sizes 10000 1000000

Each size runs in fresh subprocesses (one for us, one for SciPy), so that compile time is
a true first call and peak RSS (``resource.getrusage``) belongs to one solver. Columns:

- ``ours``: median warm wall time of ``run_standard`` (all the way to a FitResult);
- ``lm/ours``, ``trf/ours``: SciPy's median warm time (default ``curve_fit`` usage, i.e.
  finite-difference Jacobian) divided by ours: > 1 means we are faster;
- ``compile``: first-call compile time (wall; CPU seconds in brackets, less sensitive to
  other processes on a shared machine); ``RSS`` our peak resident memory (data included),
  ``base`` the process after importing JAX and starting its CPU backend, and the budget
  2 (data + Jacobian) + 300 MB;
- ``cached``: the first-call compile time and peak RSS of a second fresh process that loads
  the solver from the persistent compilation cache (nlsq_tasks/_compile_cache.py), as a
  Prefect process worker or a batch job does after its first run;
- ``passes/it``: data passes per trust-region iteration (nfev / nit);
- ``ours/(nit*pass)``: our time over nit times one fused pass (cost + J^T J + J^T r +
  statistics) at the solution: ~1 means the loop adds nothing beyond its data passes.

Timings on a shared 2-core machine are noisy: run it more than once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import sys
import time

N_PARAMS = 3


def make_data(n: int):
    import numpy as np

    rng = np.random.default_rng(12345)
    x = np.linspace(0.0, 10.0, n)
    y = np.exp(-0.5 * x)  # in place below: no temporaries to inflate the peak RSS
    y *= 2.0
    y += 0.3
    for lo in range(0, n, 1 << 20):
        y[lo : lo + (1 << 20)] += 0.05 * rng.standard_normal(min(1 << 20, n - lo))
    return x, y


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def worker_ours(n: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import nlsq_tasks  # noqa: F401

    jax.block_until_ready(jnp.zeros(3))  # backend up: the baseline before any data
    base_mb = _peak_rss_mb()
    x, y = make_data(n)
    from nlsq_tasks.engine.normal_eqs import data_pass
    from nlsq_tasks.engine.options import SolverOptions
    from nlsq_tasks.engine.strategies import run_standard, standard_layout

    def model(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    p0 = np.array([1.0, 1.0, 0.0])
    lo, hi = np.full(3, -np.inf), np.full(3, np.inf)
    opts = SolverOptions()
    t0 = time.perf_counter()
    first = run_standard(model, x, y, None, p0, lo, hi, opts, ["a", "b", "c"])
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = run_standard(model, x, y, None, p0, lo, hi, opts, ["a", "b", "c"])
        times.append(time.perf_counter() - t0)
    fit_rss_mb = _peak_rss_mb()  # before the pass timing below makes its own copies
    # one fused pass at the solution, on the solver's data layout (padded size, tile)
    size, tile = standard_layout(n)
    xj, yj = (jnp.asarray(np.pad(a, (0, size - n), mode="edge")) for a in (x, y))
    pj = jnp.asarray(res.popt)
    one_pass = jax.jit(lambda p, xx, yy: data_pass(model, "linear", 1.0, p, xx, yy, None, n, tile))
    jax.block_until_ready(one_pass(pj, xj, yj))
    pt = []
    for _ in range(max(5, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(one_pass(pj, xj, yj))
        pt.append(time.perf_counter() - t0)
    return {
        "time": float(np.median(times)),
        "first_call": first_s,
        "compile": first.timings["compile_s"],
        "nfev": res.nfev,
        "nit": res.nit,
        "pass": float(np.median(pt)),
        "popt": res.popt.tolist(),
        "rss_mb": fit_rss_mb,
        "base_mb": base_mb,
        "compile_cpu": first.timings.get("compile_cpu_s", float("nan")),
        "status": res.status.name,
    }


def worker_scipy(n: int, repeats: int) -> dict:
    import numpy as np
    from scipy.optimize import curve_fit

    x, y = make_data(n)

    def model(x, a, b, c):
        return a * np.exp(-b * x) + c

    out = {}
    for method in ("lm", "trf"):
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            popt, _ = curve_fit(model, x, y, p0=[1.0, 1.0, 0.0], method=method)
            times.append(time.perf_counter() - t0)
        out[method] = float(np.median(times[1:]))
        out[method + "_popt"] = popt.tolist()
    out["rss_mb"] = _peak_rss_mb()
    return out


def run_worker(kind: str, n: int, repeats: int, cache_dir: str = "off") -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--n", str(n), "--repeats", str(repeats)]
    env = dict(os.environ, NLSQ_JAX_CACHE_DIR=cache_dir)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed for n={n}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--with-1e7", action="store_true", help="also run n = 1e7 (SciPy takes a while)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--worker", choices=["ours", "scipy"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = worker_ours if args.worker == "ours" else worker_scipy
        print(json.dumps(fn(args.n, args.repeats)))
        return
    sizes = args.sizes or ([10**4, 10**5, 10**6] + ([10**7] if args.with_1e7 else []))
    head = (
        f"{'n':>9} {'ours':>9} {'lm':>9} {'trf':>9} {'lm/ours':>8} {'trf/ours':>9} {'compile':>11} "
        f"{'RSS MB':>7} {'base':>5} {'budget':>7} {'cached: compile':>15} {'RSS':>5} {'nfev':>5} {'nit':>4} {'passes/it':>9} {'pass':>9} {'ours/(nit*pass)':>15}"
    )
    print(head)
    print("-" * len(head))
    cache = tempfile.mkdtemp(prefix="nlsq-bench-jaxcache-")
    for n in sizes:
        o = run_worker("ours", n, args.repeats, cache)  # cold: this shape was never compiled
        c = run_worker("ours", n, 1, cache)  # a new process that loads the solver from the cache
        s = run_worker("scipy", n, max(1, args.repeats if n < 10**7 else 1))
        budget = 2 * (16 * n + 8 * n * N_PARAMS) / 2**20 + 300
        print(
            f"{n:>9.0e} {o['time'] * 1e3:>7.1f}ms {s['lm'] * 1e3:>7.1f}ms {s['trf'] * 1e3:>7.1f}ms "
            f"{s['lm'] / o['time']:>7.2f}x {s['trf'] / o['time']:>8.2f}x {o['compile']:>5.2f}s({o['compile_cpu']:.1f}) "
            f"{o['rss_mb']:>7.0f} {o['base_mb']:>5.0f} {budget:>7.0f} {c['compile']:>14.2f}s {c['rss_mb']:>5.0f} {o['nfev']:>5} {o['nit']:>4} {o['nfev'] / max(o['nit'], 1):>9.2f} "
            f"{o['pass'] * 1e3:>7.2f}ms {o['time'] / (max(o['nit'], 1) * o['pass']):>15.2f}",
            flush=True,
        )
        diff = max(abs(a - b) / abs(b) for a, b in zip(o["popt"], s["lm_popt"]))
        if diff > 1e-5:
            print(f"          note: popt differs from SciPy lm by {diff:.1e} (relative)")


if __name__ == "__main__":
    main()
