#!/bin/bash
# One-GPU check of the engine, in under 9 minutes (a hard `timeout` guards each section):
#
#   bash bench/gpu_check.sh            # from the repository root, in the project's venv
#
# Reports:
#   1. the GPU (nvidia-smi and JAX) and MemoryBudget.compute(use_gpu=True) derived from it;
#   2. the strategy the planner selects at 1e6, 1e7 and 1e8 points (3 parameters);
#   3. at 1e7 and 1e8 points: compile time, warm fit time, passes, ms per pass and points/s
#      per pass (anchor: a published 55 ms for a 1e7-point fit; aim < 50 ms);
#   4. the same 1e7 fit on the CPU, as a ratio (CPU warm time / GPU warm time);
#   5. many small fits (fit_batch, one vmap): fits/s at 1e5 and 1e6 fits of 25 and 100
#      points, float64 (goal >= 1e6 fits/s; anchor: Gpufit's ~3e6 fits/s in float32),
#      via bench/batch_vs_scipy.py --only many.
# Needs jax[cuda12] installed; prints a table to stdout and exits non-zero on failure.
# GPU_CHECK_DRY_RUN=1 runs the same script on the CPU at 1/100 of the sizes (checks the
# script itself on a machine without a GPU; its numbers mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || command -v python3 )}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # grow on demand: the budget sees real free memory
LIMIT_S="${GPU_CHECK_LIMIT_S:-290}"

echo "## nvidia-smi"
nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free,driver_version --format=csv || echo "(nvidia-smi not available)"

engine_section() {
timeout --signal=TERM "${LIMIT_S}" "${PY}" - <<'PYEOF'
import json, os, sys, time

import jax
import jax.numpy as jnp
import numpy as np

import nlsq_tasks
from nlsq_tasks.workflow import MemoryBudget, MemoryBudgetSelector

t_start = time.perf_counter()
gpus = [d for d in jax.devices() if d.platform == "gpu"]
print("## JAX", jax.__version__, "devices:", jax.devices())
DRY = os.environ.get("GPU_CHECK_DRY_RUN") == "1"
SCALE = 100 if DRY else 1
if not gpus and not DRY:
    sys.exit("no GPU visible to JAX (install jax[cuda12]); nothing to check")
if DRY:
    print("DRY RUN on", jax.devices()[0].platform, "at 1/100 of the sizes: the numbers mean nothing")
    gpus = jax.devices()
N7, N8 = 10**7 // SCALE, 10**8 // SCALE
stats = {}
try:
    stats = gpus[0].memory_stats() or {}
except Exception as exc:  # not every backend reports it
    print("memory_stats unavailable:", exc)
if stats:
    print(f"GPU memory: bytes_limit={stats.get('bytes_limit', 0) / 2**30:.1f} GiB, in use={stats.get('bytes_in_use', 0) / 2**30:.2f} GiB")

print("\n## MemoryBudget.compute(use_gpu=True)")
for n in (10**6, 10**7, 10**8):
    b = MemoryBudget.compute(n_points=n, n_params=3, use_gpu=True)
    print(f"n={n:>11,}: {json.dumps(b.to_dict())}")

print("\n## selected strategy (3 parameters, auto)")
for n in (10**6, 10**7, 10**8):
    sel = MemoryBudgetSelector()
    sel.select(n, 3, use_gpu=True)
    d = sel.last_decision
    print(f"n={n:>11,}: {d.strategy.value:<9} {d.reason}")


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def data(n):
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 5.0, n)
    return x, 2.5 * np.exp(-1.3 * x) + 0.4 + 0.05 * rng.standard_normal(n)


def fit_twice(x, y, device=None, **kw):
    ctx = jax.default_device(device) if device is not None else _null()
    with ctx:
        t = time.perf_counter()
        cold = nlsq_tasks.fit(model, x, y, p0=[1.0, 1.0, 0.0], **kw)
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = nlsq_tasks.fit(model, x, y, p0=[1.0, 1.0, 0.0], **kw)
        warm_s = time.perf_counter() - t
    return cold, cold_s, warm, warm_s


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


print("\n## fits on the GPU (warm = second identical fit; per pass = run_s / nfev)")
hdr = f"{'n':>11} {'strategy':<9} {'devices':>7} {'compile s':>9} {'cold fit s':>10} {'warm fit s':>10} {'run s':>7} {'nfev':>4} {'ms/pass':>8} {'Gpts/s/pass':>11}"
print(hdr)
rows = {}
for n in (N7, N8):
    if time.perf_counter() - t_start > 200:
        print(f"{n:>11,} skipped: time budget")
        continue
    x, y = data(n)
    cold, cold_s, warm, warm_s = fit_twice(x, y)
    run_s = warm.timings.get("run_s", float("nan"))
    per_pass = run_s / max(warm.nfev, 1)
    rows[n] = (warm, warm_s)
    print(f"{n:>11,} {warm.strategy:<9} {warm.execution.get('n_devices', 1):>7} {cold.timings.get('compile_s', float('nan')):>9.2f} "
          f"{cold_s:>10.3f} {warm_s:>10.3f} {run_s:>7.3f} {warm.nfev:>4} {per_pass * 1e3:>8.2f} {n / per_pass / 1e9:>11.2f}")
    del x, y
if N7 in rows:
    w, s = rows[N7]
    print(f"1e7 warm fit {s * 1e3:.1f} ms vs the 55 ms anchor: {s / 0.055:.2f}x ({'under' if s < 0.050 else 'NOT under'} the 50 ms aim)")

print("\n## the same 1e7 fit on the CPU")
if time.perf_counter() - t_start < 220 and N7 in rows:
    x, y = data(N7)
    cpu = jax.devices("cpu")[0]
    c_cold, c_cold_s, c_warm, c_warm_s = fit_twice(x, y, device=cpu, devices=1)
    gpu_warm, gpu_s = rows[N7]
    print(f"CPU ({os.cpu_count()} cores) warm fit {c_warm_s:.3f} s, GPU {gpu_s:.3f} s: GPU is {c_warm_s / gpu_s:.1f}x faster; "
          f"max |dpopt|/|popt| = {np.max(np.abs(c_warm.popt / gpu_warm.popt - 1)):.1e}")
else:
    print("skipped: time budget")
print(f"\n# gpu_check done in {time.perf_counter() - t_start:.0f} s")
PYEOF
}

batch_section() {
  echo
  echo "## many small fits on the GPU (fit_batch)"
  local ks="100000 1000000"
  [[ "${GPU_CHECK_DRY_RUN:-}" == "1" ]] && ks="1000 10000"
  timeout --signal=TERM "${GPU_CHECK_BATCH_LIMIT_S:-240}" "${PY}" bench/batch_vs_scipy.py --only many \
    --k ${ks} --n 25 100 --scipy-sample 200 --repeats 2
}

rc=0
engine_section || rc=$?   # one section failing still runs (and reports) the other
batch_section || rc=$?
exit "$rc"
