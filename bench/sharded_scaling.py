"""Sharded passes: scaling from 1 to 4 forced CPU devices, and the sharded path's overhead.

    python bench/sharded_scaling.py [--n 10000000] [--devices 1,2,4] [--strategy chunked]

For each device count D, a fresh process (the device count is fixed when JAX starts) with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` fits the same exponential decay
(3 parameters, soft_l1 loss) at ``--n`` points: once cold (compile), then warm. It prints
the warm time per pass (``run_s / nfev``), points per second per pass, speed-up against
one device, and popt's largest relative difference from the one-device fit.

Overhead row: on ONE device, the sharded program (``shard_map`` over a 1-device mesh, the
device fold, the segment loop) against the plain one-device program, same data.

Forced CPU devices share the machine's cores: on a 2-core machine D = 4 cannot be faster
than D = 2, and other processes on the machine skew every number. Read the ratios, and
rerun on an idle machine before quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKER = r"""
import json, sys, time
import numpy as np, jax, jax.numpy as jnp
import nlsq_tasks
from nlsq_tasks.engine import sharded

n, strategy, overhead = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c
rng = np.random.default_rng(0)
x = np.linspace(0.0, 5.0, n)
y = 2.5 * np.exp(-1.3 * x) + 0.4 + 0.05 * rng.standard_normal(n)
kw = dict(p0=[1.0, 1.0, 0.0], loss="soft_l1", f_scale=0.1, strategy=strategy, ftol=1e-10, xtol=1e-10, gtol=1e-10)
if strategy == "chunked":
    kw["chunk_size"] = 65536
out = {"devices": len(jax.devices())}
def timed(**extra):
    t = time.perf_counter()
    r = nlsq_tasks.fit(model, x, y, **kw, **extra)
    return r, time.perf_counter() - t
cold, cold_s = timed()
warm, warm_s = timed()
out.update(cold_s=cold_s, warm_s=warm_s, run_s=warm.timings.get("run_s", float("nan")),
           compile_s=cold.timings.get("compile_s", float("nan")), nfev=warm.nfev, popt=warm.popt.tolist(),
           execution=warm.execution)
if overhead:  # one device: the sharded program on a 1-device mesh vs the plain program
    ex = sharded.plan_devices(n, strategy, chunk_size=kw.get("chunk_size"))
    forced = sharded.Execution(ex.backend, ex.device_kind, 1, 1, *sharded.shard_layout(n, 1, strategy, kw.get("chunk_size")),
                               True, "forced for the overhead benchmark")
    args = (model, x, y, None, np.array(kw["p0"]), np.full(3, -np.inf), np.full(3, np.inf))
    from nlsq_tasks.engine.options import SolverOptions
    opts = SolverOptions(ftol=1e-10, xtol=1e-10, gtol=1e-10, loss="soft_l1", f_scale=0.1)
    sharded.fit_sharded_arrays(*args, opts, ["a", "b", "c"], strategy=strategy, execution=forced)
    t = time.perf_counter()
    r = sharded.fit_sharded_arrays(*args, opts, ["a", "b", "c"], strategy=strategy, execution=forced)
    out.update(sharded1_s=time.perf_counter() - t, sharded1_run_s=r.timings["run_s"], sharded1_nfev=r.nfev,
               sharded1_popt=r.popt.tolist())
    plain = nlsq_tasks.fit(model, x, y, bounds=(-np.inf, np.inf), **kw)
    t = time.perf_counter()
    plain = nlsq_tasks.fit(model, x, y, bounds=(-np.inf, np.inf), **kw)
    out.update(plain_s=time.perf_counter() - t, plain_run_s=plain.timings.get("run_s"), plain_nfev=plain.nfev)
print("RESULT " + json.dumps(out))
"""


def run(d: int, n: int, strategy: str, overhead: bool) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", WORKER, str(n), strategy, "1" if overhead else "0"],
                          env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"D={d} failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--devices", default="1,2,4")
    ap.add_argument("--strategy", default="chunked", choices=["standard", "chunked"])
    args = ap.parse_args()
    counts = [int(v) for v in args.devices.split(",")]
    print(f"# sharded scaling: n={args.n:,}, strategy={args.strategy}, soft_l1, 3 params; os.cpu_count()={os.cpu_count()}")
    t0 = time.perf_counter()
    rows = [run(d, args.n, args.strategy, overhead=(d == 1)) for d in counts]
    import numpy as np

    base = rows[0]
    per_pass0 = base["run_s"] / base["nfev"]
    print(f"{'devices':>7} {'sharded':>7} {'compile s':>9} {'warm fit s':>10} {'ms/pass':>8} {'Mpts/s/pass':>11} "
          f"{'speed-up':>8} {'max rel dpopt':>13}")
    for r in rows:
        per_pass = r["run_s"] / r["nfev"]
        rel = float(np.max(np.abs(np.array(r["popt"]) / np.array(base["popt"]) - 1)))
        print(f"{r['devices']:>7} {str(r['execution']['sharded']):>7} {r['compile_s']:>9.2f} {r['warm_s']:>10.3f} "
              f"{per_pass * 1e3:>8.1f} {args.n / per_pass / 1e6:>11.1f} {per_pass0 / per_pass:>8.2f}x {rel:>13.1e}")
    if "sharded1_run_s" in base:
        a = base["sharded1_run_s"] / base["sharded1_nfev"]
        b = base["plain_run_s"] / base["plain_nfev"]
        print(f"overhead on 1 device: sharded program {a * 1e3:.1f} ms/pass vs plain {b * 1e3:.1f} ms/pass "
              f"= {a / b:.3f}x (whole warm fit {base['sharded1_s']:.3f} s vs {base['plain_s']:.3f} s)")
    print(f"# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
