"""Overhead of running a fit as ``fit_flow`` instead of a bare ``fit()``.

For each size, the same data (``a*exp(-b*x)+c`` with noise, as an .npz file) is fitted
(1) by ``nlsq_tasks.fit`` on arrays already in memory, and (2) by ``fit_flow`` (inspect,
plan, load, fit, store atomically, artifacts; plot off). Both run warm: untimed
rounds first, so JAX compilation and Prefect's temporary server start are not counted.
Printed: median wall times, the difference (the flow's overhead) and the ratio.
Goal: overhead <= 2 s per flow run.

    python bench/flow_overhead.py            # 1e5 points
    python bench/flow_overhead.py --big      # also 1e7 points (about 0.5 GB of data on disk)

Runs against ``PREFECT_API_URL`` when set, else Prefect's temporary local server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 10.0, n)
    y = 2.5 * np.exp(-0.7 * x) + 0.3 + rng.normal(0.0, 0.05, n)
    np.savez(path, x=x, y=y)


def bench(n: int, repeats: int, workdir: Path) -> dict:
    from flows import FitRequest, fit_flow
    from nlsq_tasks import fit

    data = workdir / f"decay_{n}.npz"
    make_data(data, n)
    with np.load(data) as z:
        x, y = z["x"], z["y"]
    model, p0 = "a*exp(-b*x) + c", [1.0, 1.0, 0.0]

    def bare() -> float:
        t = time.perf_counter()
        fit(model, x, y, p0=p0, workflow="standard")
        return time.perf_counter() - t

    def flowed(i: int) -> float:
        req = FitRequest.model_validate({"data": {"uri": str(data)}, "model": model, "p0": p0, "preset": "standard",
                                         "plot": False, "storage_uri": str(workdir / f"out_{n}_{i}")})
        t = time.perf_counter()
        state = fit_flow(req, return_state=True)
        dt = time.perf_counter() - t
        if not state.is_completed():
            raise RuntimeError(f"fit_flow failed: {state.message}")
        return dt

    # Warm: compilation (the flow's fit task compiles once more for its own call path),
    # the temporary server's start and the first client connections.
    bare(), flowed(-1), flowed(-2)
    t_bare = [bare() for _ in range(repeats)]
    t_flow = [flowed(i) for i in range(repeats)]
    mb, mf = statistics.median(t_bare), statistics.median(t_flow)
    return {"n": n, "bare_s": mb, "flow_s": mf, "overhead_s": mf - mb, "ratio": mf / mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also 1e7 points")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    sizes = [100_000] + ([10_000_000] if args.big else [])
    with tempfile.TemporaryDirectory(prefix="nlsq-flow-bench-") as tmp, \
            temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}):
        rows = [bench(n, args.repeats, Path(tmp)) for n in sizes]
    print(f"{'n':>12} {'bare fit() s':>13} {'fit_flow s':>11} {'overhead s':>11} {'flow/bare':>10}")
    for r in rows:
        print(f"{r['n']:>12,} {r['bare_s']:>13.3f} {r['flow_s']:>11.3f} {r['overhead_s']:>11.3f} {r['ratio']:>10.2f}")
    worst = max(r["overhead_s"] for r in rows)
    print(f"goal: overhead <= 2 s per flow run -> {'met' if worst <= 2.0 else 'NOT met'} (worst {worst:.2f} s)")


if __name__ == "__main__":
    main()
