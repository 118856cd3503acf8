"""A fit driver for the driver-killed test: run as a script it fits the S3 data on the
given Dask scheduler with checkpoints, and SIGKILLs itself in the middle of a pass (a
crash: no clean-up, no except clause runs). Imported, it gives the same fit to resume."""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np

CHUNK = 1500
P0 = [1.0, 0.5, 0.0]
EVERY = 4  # checkpoint every 4 chunks (and at each pass end)


def fit(uri, options, sink=None, client=None, progress=None):
    import jax.numpy as jnp

    from nlsq_tasks.engine.options import SolverOptions
    from nlsq_tasks.engine.streaming import run_streaming
    from nlsq_tasks.io import open_source
    from nlsq_tasks.workflow import StreamingConfig

    def model(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    src = open_source(uri, sigma_key=2, chunk_size=CHUNK, storage_options=options)
    ex = None
    if client is not None:
        from nlsq_tasks.dask import DaskExecutor

        ex = DaskExecutor(client)
    try:
        res = run_streaming(model, src, np.asarray(P0, float), np.array([0.0, 0.0, -1.0]), np.array([10.0, 5.0, 1.0]),
                            SolverOptions(), ["a", "b", "c"],
                            config=StreamingConfig(chunk_size=CHUNK, warm_start=False, checkpoint_every_chunks=EVERY),
                            checkpoint=sink, progress=progress, fingerprint="dask-driver-test",
                            executor=None if ex is None else ex.bind)
    finally:
        if ex is not None:
            ex.close()
    return res, (None if ex is None else ex.record)


def main(address, uri, options_json, ckpt_uri, kill_pass, kill_chunk):
    from distributed import Client

    from nlsq_tasks.io import CheckpointStore

    def progress(ev):
        if ev["phase"] == "pass" and ev["pass"] == int(kill_pass) and ev["chunk"] == int(kill_chunk):
            print("KILLING", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    with Client(address) as client:
        fit(uri, json.loads(options_json), CheckpointStore(ckpt_uri), client, progress)
    print("FINISHED", flush=True)  # not reached when the kill happens


if __name__ == "__main__":
    main(*sys.argv[1:])
