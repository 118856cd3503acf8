"""Time per pass on a Dask cluster vs the in-process (sequential) executor.

One *pass* = the partial sums (cost, J^T J, J^T r, statistics) of every chunk of the data
at K = 4 trial parameter rows, folded in chunk order: what one streaming iteration costs.
Measured through the pass interface itself (``engine.passes.evaluate``), on a ``.npy``
of x, y float64 (16 bytes a point) in ``--dir``:

- sequential: ``SourceExecutor`` in this process (reads every chunk every pass; after the
  first pass the file is in the page cache, so later passes measure compute + copy);
- Dask, 1 and 2 worker processes of a LocalCluster (1 thread each): first pass (workers
  read their chunks, compile the chunk function) and later passes (chunks resident);
- Dask's overhead per pass at 1e6 points (one pass is then ~tens of ms of compute);
- a projection to 1e10 points on a cluster, with the assumptions printed.

Every Dask pass is checked bit-identical to the sequential one. Usage::

    python bench/dask_pass.py                 # 3e7 points (the default on a shared 2-core box)
    python bench/dask_pass.py --n 1e8         # 1.6 GB file, ~5 GB of RAM in all
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

CHUNK = 1 << 20  # 1,048,576 points a chunk
K = 4
P_TRUE = (2.5, 1.3, 0.5)


def model(x, a, b, c):
    import jax.numpy as jnp

    return a * jnp.exp(-b * x) + c


def make_npy(path: str, n: int) -> None:
    """x, y columns written block by block (memory stays ~100 MB whatever n)."""
    if os.path.exists(path) and os.path.getsize(path) > n * 16:
        return
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, 2))
    rng = np.random.default_rng(0)
    step = 1 << 22
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        x = (lo + np.arange(hi - lo)) * (5.0 / n)
        mm[lo:hi, 0] = x
        mm[lo:hi, 1] = P_TRUE[0] * np.exp(-P_TRUE[1] * x) + P_TRUE[2] + 0.05 * rng.standard_normal(hi - lo)
    mm.flush()
    del mm


def trials() -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.asarray(P_TRUE) + 0.05 * rng.standard_normal((K, 3))


def timed_passes(executor, params, repeat: int):
    from nlsq_tasks.engine.passes import evaluate

    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        acc = evaluate(executor, params)
        acc = [np.asarray(a) for a in acc]
        times.append(time.perf_counter() - t)
        out = acc
    return out, times


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def bench_size(path: str, n: int, repeat: int, client, workers):
    from nlsq_tasks.dask import DaskExecutor
    from nlsq_tasks.engine.passes import NormalEquationsPass, SourceExecutor
    from nlsq_tasks.io import open_source

    red = NormalEquationsPass(model, "linear")
    params = trials()
    src = open_source(path, chunk_size=min(CHUNK, n))
    seq, t_seq = timed_passes(SourceExecutor(red, src), params, repeat + 1)
    rows = [("sequential (this process)", t_seq[0], statistics.median(t_seq[1:]), True, "-")]
    for w in (1, 2):
        ex = DaskExecutor(client, workers=workers[:w])
        passes = ex.bind(red, src)
        out, t = timed_passes(passes, params, repeat + 1)
        rec = dict(ex.record)
        ex.close()
        rows.append((f"dask, {w} worker{'s' if w > 1 else ''}", t[0], statistics.median(t[1:]), same(out, seq),
                     f"resident={rec['resident']}, reads {rec['storage_reads']}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=float, default=3e7, help="points in the large file (default 3e7)")
    ap.add_argument("--repeat", type=int, default=3, help="later (resident) passes timed per row")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    a = ap.parse_args()
    n_big = int(a.n)

    from distributed import Client, LocalCluster

    import nlsq_tasks  # noqa: F401  (float64 on)

    paths = {}
    for n in (1_000_000, n_big):
        paths[n] = os.path.join(a.dir, f"nlsq-bench-dask-{n}.npy")
        t = time.perf_counter()
        make_npy(paths[n], n)
        print(f"data: {n:.0e} points, {os.path.getsize(paths[n]) / 1e9:.2f} GB at {paths[n]} "
              f"({time.perf_counter() - t:.1f} s to write)")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        workers = sorted(client.scheduler_info()["workers"])
        print(f"cluster: LocalCluster, {len(workers)} worker processes x 1 thread, os.cpu_count()={os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f} (a shared machine makes the ratios noisy)")
        results = {}
        for n in (1_000_000, n_big):
            results[n] = bench_size(paths[n], n, a.repeat, client, workers)
            print(f"\n## {n:.0e} points, chunks of {min(CHUNK, n):,}, K = {K} trial rows")
            print(f"| executor | first pass s | later pass s (median of {a.repeat}) | vs sequential (later) | "
                  "bit-identical | notes |")
            print("|---|---|---|---|---|---|")
            base = results[n][0][2]
            for name, first, later, ok, note in results[n]:
                print(f"| {name} | {first:.3f} | {later:.3f} | {later / base:.2f}x | {ok} | {note} |")
    small = results[1_000_000]
    overhead = small[1][2] - small[0][2]
    big = results[n_big]
    rate1 = n_big / big[1][2]  # points per second per worker, resident
    print(f"\nDask overhead per pass at 1e6 points (1 worker, resident, minus sequential): {overhead * 1e3:.1f} ms")
    print(f"resident compute rate, 1 worker: {rate1 / 1e6:.1f} M points/s")

    # -- projection to 1e10 points ------------------------------------------------------
    n10, bytes_pt, W, bw, passes, mem_w = 1e10, 16, 64, 200e6, 12, 16e9
    data = n10 * bytes_pt
    read_first = data / (W * bw)
    compute = n10 / (W * rate1)
    tasks = W * 4
    sched = tasks * 1e-3  # ~1 ms of scheduler time per task (Dask's documented order of magnitude)
    later = compute + max(overhead, sched)
    print("\n## projection: 1e10 points (160 GB of x, y float64) on a cluster")
    print(f"assumptions: {W} workers (1 core each) with {mem_w / 1e9:.0f} GB each ({W * mem_w / 1e12:.2f} TB: "
          f"the data fit in 50% -> resident); read bandwidth {bw / 1e6:.0f} MB/s per worker from the object store; "
          f"compute {rate1 / 1e6:.1f} M points/s per worker (measured above, this machine); {passes} passes "
          "(a typical streaming fit with adaptive trials); 4 tasks per worker and pass, ~1 ms scheduler time each.")
    print(f"first pass ~ max(read {read_first:.1f} s, compute {compute:.1f} s) = {max(read_first, compute):.1f} s")
    print(f"later passes ~ compute {compute:.1f} s + overhead {max(overhead, sched):.2f} s = {later:.1f} s")
    print(f"fit ~ {max(read_first, compute) + (passes - 1) * later:.0f} s; "
          f"without residency every pass re-reads: ~ {passes * max(read_first, compute):.0f} s")


if __name__ == "__main__":
    main()
