"""The driver process killed (SIGKILL) in the middle of a pass on a Dask cluster: running
the fit again resumes from its last checkpoint and ends bit-identical to an
uninterrupted in-process fit."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _dask_driver as driver  # noqa: E402


def _put(s3_server):
    import fsspec

    options = s3_server.storage_options
    bucket = s3_server.make_bucket()
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 5.0, 20_000)
    s = 0.05 * (1.0 + 0.5 * rng.random(x.size))
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + s * rng.standard_normal(x.size)
    buf = io.BytesIO()
    np.save(buf, np.column_stack([x, y, s]))
    fsspec.filesystem("s3", **options).pipe_file(f"{bucket}/d.npy", buf.getvalue())
    return f"s3://{bucket}/d.npy", options


def test_driver_killed_then_resumed_is_bit_identical(client, cluster, s3_server, tmp_path):
    from nlsq_tasks.io import CheckpointStore

    uri, options = _put(s3_server)
    reference, _ = driver.fit(uri, options)  # in process, uninterrupted, no checkpoints
    assert reference.checkpoints["passes"] >= 5
    ckpt = str(tmp_path / "ckpt")
    kill_pass, kill_chunk = 3, 9  # after the checkpoint at chunk 8 of pass 3
    proc = subprocess.run(
        [sys.executable, str(HERE / "_dask_driver.py"), cluster.scheduler_address, uri, json.dumps(options), ckpt,
         str(kill_pass), str(kill_chunk)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9 and "KILLING" in proc.stdout and "FINISHED" not in proc.stdout, proc.stderr[-3000:]
    store = CheckpointStore(ckpt)
    events = []
    res, record = driver.fit(uri, options, store, client, events.append)
    assert res.checkpoints["resumed"]
    np.testing.assert_array_equal(res.popt, reference.popt)
    assert (res.cost, res.nit, res.nfev) == (reference.cost, reference.nit, reference.nfev)
    # it continued mid-pass 3 (after chunk 7, the 8th of the pass) instead of starting over
    first = next(e for e in events if e["phase"] == "pass")
    assert (first["pass"], first["chunk"]) == (kill_pass, 8)
    assert record["n_workers"] == 2
