"""Read throughput of nlsq_tasks.io chunk sources, as ratios against numpy loading the whole
file at once (np.load / np.loadtxt): how much a bounded-memory pass costs.

    .venv/bin/python bench/io_read_throughput.py [n_points]

Prints one line per case: seconds per full pass, MB/s, and the ratio to the numpy baseline
(> 1 means the chunked pass is slower). The S3 case uses a moto server on 127.0.0.1, so it
measures the request overhead of ranged GETs, not a real network.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile
import time

import numpy as np

from nlsq_tasks.io import open_source


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def full_pass(uri, so=None, chunk_size=65536, readahead=2):
    src = open_source(uri, chunk_size=chunk_size, storage_options=so, readahead=readahead)
    return sum(float(c.y[0]) for c in src.chunks())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    rng = np.random.default_rng(0)
    table = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.uniform(1, 2, size=n)])
    with tempfile.TemporaryDirectory() as d:
        npy = pathlib.Path(d) / "data.npy"
        np.save(npy, table)
        mb = npy.stat().st_size / 1e6
        base = best_of(lambda: np.load(npy))
        for ra in (0, 2):
            t = best_of(lambda: full_pass(str(npy), readahead=ra))
            print(f"npy local  n={n:>9} readahead={ra}: {t:7.3f} s/pass {mb / t:8.1f} MB/s  ratio vs np.load {t / base:6.2f}")
        m = min(n, 300_000)
        csv = pathlib.Path(d) / "data.csv"
        with open(csv, "w") as f:
            f.write("x,y,sigma\n")
            np.savetxt(f, table[:m], delimiter=",", fmt="%.17g")
        base_csv = best_of(lambda: np.loadtxt(csv, delimiter=",", skiprows=1), repeats=1)
        t = best_of(lambda: full_pass(str(csv)), repeats=1)
        print(f"csv local  n={m:>9} readahead=2: {t:7.3f} s/pass {csv.stat().st_size / 1e6 / t:8.1f} MB/s  ratio vs np.loadtxt {t / base_csv:6.2f}")
        try:
            sys.path.append(str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
            from s3_server import MotoS3
        except ImportError:
            print("s3 (moto): skipped, moto not installed")
            return
        import fsspec

        with MotoS3() as s3:
            so = s3.storage_options
            bucket = s3.make_bucket()
            fsspec.filesystem("s3", **so).put_file(str(npy), f"{bucket}/data.npy")
            fs = fsspec.filesystem("s3", **so)
            base_s3 = best_of(lambda: np.load(fs.open(f"{bucket}/data.npy", "rb")), repeats=1)
            for ra in (0, 2):
                t = best_of(lambda: full_pass(f"s3://{bucket}/data.npy", so, readahead=ra), repeats=1)
                print(f"npy s3moto n={n:>9} readahead={ra}: {t:7.3f} s/pass {mb / t:8.1f} MB/s  ratio vs np.load(s3 file) {t / base_s3:6.2f}")


if __name__ == "__main__":
    main()
