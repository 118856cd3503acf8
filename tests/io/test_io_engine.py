"""The engine's streaming solver over nlsq_tasks.io sources: same chunks, same result,
bit for bit, as over the in-memory ArrayChunkSource (read-ahead on, real back ends)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from io_helpers import write

from nlsq_tasks.engine.options import SolverOptions
from nlsq_tasks.engine.sources import ArrayChunkSource
from nlsq_tasks.io import CheckpointStore, open_source

streaming = pytest.importorskip("nlsq_tasks.engine.streaming")


def _decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


class _Config:
    n_trial_radii = 4
    checkpoint_every_chunks = 2
    warm_start = False
    warm_start_points = 1000
    max_passes = 100


def _problem():
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 5.0, 4000)
    sigma = 0.05 * (1.0 + 0.5 * rng.random(x.size))
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + sigma * rng.standard_normal(x.size)
    return x, y, sigma


def _fit(source, checkpoint=None):
    return streaming.run_streaming(
        _decay, source, np.array([1.0, 0.5, 0.0]), np.array([0.0, 0.0, -1.0]), np.array([10.0, 5.0, 1.0]),
        SolverOptions(), ["a", "b", "c"], config=_Config(), checkpoint=checkpoint,
    )


@pytest.fixture(scope="module")
def reference():
    x, y, s = _problem()
    return _fit(ArrayChunkSource(x, y, s, chunk_size=1000))


@pytest.mark.slow  # one JIT compilation of the streaming core, shared by the cases
@pytest.mark.parametrize(
    "store, fmt",
    [("local", "npy"), ("s3", "npy"), ("memory", "npz-compressed"), ("memory", "csv"), ("memory", "parquet")],
    indirect=["store"],
)
def test_streaming_over_io_sources_matches_in_memory(store, fmt, reference):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    base, so = store
    x, y, s = _problem()
    uri, keys = write(fmt, base, so, x, y, s)
    ckpt = CheckpointStore(f"{base}/ckpt", storage_options=so)
    res = _fit(open_source(uri, chunk_size=1000, storage_options=so, readahead=2, **keys), ckpt)
    assert reference.success
    np.testing.assert_array_equal(res.popt, reference.popt)
    np.testing.assert_array_equal(res.pcov, reference.pcov)
    assert res.nit == reference.nit
    assert ckpt.list(), "the streaming run wrote checkpoints through the store"
