"""Chunked and streaming strategies: time and peak memory, each measured in a fresh process.

    python bench/chunked_streaming.py                      # 1e7-point chunked case, 1e8-point streaming case
    python bench/chunked_streaming.py --stream-n 1e7 --chunked-n 2e6     # a quick run
    python bench/chunked_streaming.py --only streaming --tmp /big/disk

**Chunked** (in-memory data, Jacobian too large): ``n`` points of
``a exp(-b x) + c`` (3 parameters). Cases: SciPy ``curve_fit`` (trf), our standard solver,
``fit(..., memory_limit_gb=L)`` (the selector forces the chunked strategy; its chunk size)
and the chunked engine with a 65,536-point chunk. Reported: wall time of a warm call (the
first call's compile time apart), peak RSS, and RSS above the data's own size.
Targets: chunked time <= 1.5 x standard; peak RSS <= data + 300 MB.

**Streaming** (data out of core): ``n`` points written as an ``(n, 2)`` float64 ``.npy``
(1.6 GB for 1e8) in a temporary directory, read through ``nlsq_tasks.io.open_source``.
Reported: peak RSS of the fitting process, time per pass (median over passes >= 2, so no
compilation is included) and, for reference, one plain sequential ``read()`` of the file
in a fresh process. Targets: peak RSS <= 600 MB; time per pass <= 2 x one plain read.
Most of the fitting process's RSS is the JAX/XLA runtime and compiled code (about 350 MB
after the first compilations, whatever ``n``); glibc's per-thread malloc arenas add to it:
running with ``MALLOC_ARENA_MAX=2`` in the environment (children inherit it) measured
about 85 MB less. A just-written file is usually in the page cache, so the plain read measures memory
bandwidth, not a disk; the ratio is then an upper bound on what a disk or S3 would show.

Never a test: prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRUE = (2.5, 1.3, 0.5)
P0 = (1.0, 0.5, 0.0)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _make_xy(n: int):
    """x, y built in place (no n-sized temporaries), so that the peak RSS is the fit's."""
    import numpy as np

    x = np.linspace(0.0, 5.0, n)
    y = np.multiply(x, -TRUE[1])
    np.exp(y, out=y)
    y *= TRUE[0]
    y += TRUE[2]
    rng = np.random.default_rng(0)
    for lo in range(0, n, 1 << 20):  # bounded by n / 2**20
        hi = min(lo + (1 << 20), n)
        y[lo:hi] += 0.05 * rng.standard_normal(hi - lo)
    return x, y


# -- children (one measurement per fresh process) ------------------------------------------------
def child_chunked(kind: str, n: int, limit_gb: float) -> dict:
    import numpy as np

    x, y = _make_xy(n)
    data_mb = (x.nbytes + y.nbytes) / 2**20
    base = _current_rss_mb()
    if kind == "scipy":
        from scipy.optimize import curve_fit

        def f(x, a, b, c):
            return a * np.exp(-b * x) + c

        times = []
        for _ in range(2):
            t = time.perf_counter()
            popt, _ = curve_fit(f, x, y, p0=P0, method="trf")
            times.append(time.perf_counter() - t)
        return {"case": "scipy curve_fit", "first_s": times[0], "warm_s": times[1], "popt": list(popt),
                "rss_mb": _rss_mb(), "data_mb": data_mb, "base_mb": base, "strategy": "scipy"}

    import jax.numpy as jnp

    import nlsq_tasks  # noqa: F401  (float64)
    from nlsq_tasks.engine.options import SolverOptions
    from nlsq_tasks.engine.strategies import run_chunked, run_standard

    def model(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    inf = np.full(3, np.inf)
    times, res = [], None
    for _ in range(2):
        t = time.perf_counter()
        if kind == "standard":
            res = run_standard(model, x, y, None, np.array(P0), -inf, inf, SolverOptions(), ["a", "b", "c"])
        elif kind == "api-chunked":
            res = nlsq_tasks.fit(model, x, y, p0=list(P0), memory_limit_gb=limit_gb)
        else:
            res = run_chunked(model, x, y, None, np.array(P0), -inf, inf, SolverOptions(), ["a", "b", "c"], 65536)
        times.append(time.perf_counter() - t)
    label = {"standard": "standard", "api-chunked": f"fit(memory_limit_gb={limit_gb})",
             "engine-chunked": "run_chunked(chunk 65536)"}[kind]
    reason = getattr(res, "strategy_reason", "")
    return {"case": label, "first_s": times[0], "warm_s": times[1], "popt": res.popt.tolist(), "rss_mb": _rss_mb(),
            "data_mb": data_mb, "base_mb": base, "strategy": res.strategy, "reason": reason[:120], "nfev": res.nfev}


def child_write(path: str, n: int) -> dict:
    import numpy as np

    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, 2))
    block = 1 << 22
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for lo in range(0, n, block):  # bounded by n / block
        hi = min(lo + block, n)
        x = np.linspace(0.0, 5.0, n)[lo:hi] if n <= block else 5.0 * np.arange(lo, hi) / (n - 1)
        arr[lo:hi, 0] = x
        arr[lo:hi, 1] = TRUE[0] * np.exp(-TRUE[1] * x) + TRUE[2] + 0.05 * rng.standard_normal(hi - lo)
    arr.flush()
    del arr
    return {"write_s": time.perf_counter() - t, "bytes": os.path.getsize(path)}


def child_read(path: str) -> dict:
    t = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(16 << 20)
        view = memoryview(buf)
        for _ in range(1 << 40):  # bounded by the file size
            k = fh.readinto(view)
            if not k:
                break
            total += k
    return {"read_s": time.perf_counter() - t, "bytes": total, "rss_mb": _rss_mb()}


def child_stream(path: str, chunk_size: int, max_passes: int, warm_start: bool, adaptive: bool) -> dict:
    import jax.numpy as jnp
    import numpy as np

    import nlsq_tasks  # noqa: F401
    from nlsq_tasks.engine.options import SolverOptions
    from nlsq_tasks.engine.streaming import run_streaming
    from nlsq_tasks.io import open_source

    def model(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    class Cfg:
        n_trial_radii = 4
        checkpoint_every_chunks = 10**9
        warm_start_points = 100_000

    Cfg.warm_start = warm_start
    Cfg.adaptive_trials = adaptive
    Cfg.max_passes = max_passes
    base = _current_rss_mb()
    src = open_source(path, chunk_size=chunk_size)
    stamps = []

    def progress(ev):
        if ev["phase"] == "pass_end":
            stamps.append(time.perf_counter())

    inf = np.full(3, np.inf)
    t = time.perf_counter()
    res = run_streaming(model, src, np.array(P0), -inf, inf, SolverOptions(), ["a", "b", "c"], config=Cfg(),
                        progress=progress)
    total = time.perf_counter() - t
    durations = np.diff([t] + stamps)
    steady = durations[2:] if durations.size > 2 else durations
    return {"total_s": total, "passes": res.checkpoints["passes"], "pass_s": [float(d) for d in durations],
            "steady_pass_s": float(np.median(steady)), "popt": res.popt.tolist(), "status": res.status.name,
            "rss_mb": _rss_mb(), "base_mb": base, "chunk_size": chunk_size, "nfev": res.nfev,
            "trials": res.checkpoints["trial_points_evaluated"]}


# -- driver ---------------------------------------------------------------------------------------
def run_child(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_chunked(n: int, limit_gb: float, with_scipy: bool) -> None:
    print(f"\n== chunked: n = {n:.3g} points x 3 parameters (fresh process each) ==")
    rows = []
    for kind in (["scipy"] if with_scipy else []) + ["standard", "api-chunked", "engine-chunked"]:
        rows.append(run_child("chunked", kind, str(n), str(limit_gb)))
    std = next(r for r in rows if r["case"] == "standard")
    sp = next((r for r in rows if r["strategy"] == "scipy"), None)
    print(f"{'case':<30}{'strategy':<10}{'first s':>9}{'warm s':>9}{'vs std':>8}{'vs scipy':>9}{'peak MB':>9}"
          f"{'- data MB':>10}{'pre-fit MB':>11}")
    for r in rows:
        vs_sp = f"{r['warm_s'] / sp['warm_s']:.2f}" if sp else "-"
        print(f"{r['case']:<30}{r['strategy']:<10}{r['first_s']:>9.2f}{r['warm_s']:>9.2f}"
              f"{r['warm_s'] / std['warm_s']:>8.2f}{vs_sp:>9}{r['rss_mb']:>9.0f}{r['rss_mb'] - r['data_mb']:>10.0f}"
              f"{r['base_mb']:>11.0f}")
    for r in rows:
        if r.get("reason"):
            print(f"  {r['case']}: {r['reason']}")
    print(f"  data: {std['data_mb']:.0f} MB; pre-fit MB: RSS with the data built, before importing JAX; "
          "targets: chunked warm <= 1.5 x standard, peak <= data + 300 MB")


def bench_streaming(n: int, chunk_size: int, tmp: str | None, max_passes: int, warm_start: bool) -> None:
    """Streams the same file twice: K=4 tries in every pass, then adaptive trials."""
    print(f"\n== streaming: n = {n:.3g} points from an (n, 2) float64 .npy, chunk {chunk_size} ==")
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        path = str(Path(d) / "data.npy")
        w = run_child("write", path, str(n))
        read1 = run_child("read", path)
        runs = [run_child("stream", path, str(chunk_size), str(max_passes), str(int(warm_start)), str(ad))
                for ad in (0, 1)]
        read2 = run_child("read", path)
    read_s = min(read1["read_s"], read2["read_s"])
    gb = w["bytes"] / 1e9
    print(f"file: {gb:.2f} GB (written in {w['write_s']:.1f} s); plain sequential read: {read_s:.2f} s "
          f"({gb / read_s:.2f} GB/s; {read1['read_s']:.2f} s before, {read2['read_s']:.2f} s after the fit)")
    print(f"{'metric':<34}{'K=4 every pass':>16}{'adaptive':>12}{'target':>10}")
    row = lambda name, vals, tgt="": print(f"{name:<34}{vals[0]:>16}{vals[1]:>12}{tgt:>10}")  # noqa: E731
    row("status / passes / nfev", [f"{s['status']}/{s['passes']}/{s['nfev']}" for s in runs])
    row("trial points evaluated", [str(s["trials"]) for s in runs])
    row("total fit time (s)", [f"{s['total_s']:.1f}" for s in runs])
    row("peak RSS (MB)", [f"{s['rss_mb']:.0f}" for s in runs], "<= 600")
    row("  RSS after imports (MB)", [f"{s['base_mb']:.0f}" for s in runs])
    row("time per pass, steady (s)", [f"{s['steady_pass_s']:.2f}" for s in runs])
    row("time per pass / plain read", [f"{s['steady_pass_s'] / read_s:.2f}" for s in runs], "<= 2")
    for s, name in zip(runs, ("K=4", "adaptive")):
        print(f"  {name} pass times (s): " + ", ".join(f"{v:.2f}" for v in s["pass_s"]))
    print(f"  popt {[round(v, 6) for v in runs[0]['popt']]} (true {list(TRUE)})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--chunked-n", type=float, default=1e7)
    ap.add_argument("--stream-n", type=float, default=1e8)
    ap.add_argument("--chunk-size", type=int, default=1 << 18)
    ap.add_argument("--memory-limit-gb", type=float, default=0.5)
    ap.add_argument("--max-passes", type=int, default=50)
    ap.add_argument("--warm-start", action="store_true")
    ap.add_argument("--no-scipy", action="store_true")
    ap.add_argument("--only", choices=("chunked", "streaming"))
    ap.add_argument("--tmp", default=None, help="directory for the temporary .npy (needs 16 bytes x n)")
    a = ap.parse_args(argv)
    if a.child:
        kind, *rest = a.child
        if kind == "chunked":
            out = child_chunked(rest[0], int(float(rest[1])), float(rest[2]))
        elif kind == "write":
            out = child_write(rest[0], int(float(rest[1])))
        elif kind == "read":
            out = child_read(rest[0])
        else:
            out = child_stream(rest[0], int(rest[1]), int(rest[2]), bool(int(rest[3])), bool(int(rest[4])))
        print(json.dumps(out))
        return
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (other work on the machine "
          f"inflates every time below); MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')}")
    if a.only in (None, "chunked"):
        bench_chunked(int(a.chunked_n), a.memory_limit_gb, not a.no_scipy)
    if a.only in (None, "streaming"):
        bench_streaming(int(a.stream_n), a.chunk_size, a.tmp, a.max_passes, a.warm_start)


if __name__ == "__main__":
    main()
