"""The Dask pass executor on a real LocalCluster (2 worker processes, 1 thread each) with
the data on S3 (moto server on 127.0.0.1): bit-identical to the in-process executor
whatever the workers, chunks read once and kept resident, the compiled pass built once
per worker, a worker killed mid-pass, storage errors named by chunk and URI."""

from __future__ import annotations

import io
import os
import signal

import numpy as np
import pytest

from nlsq_tasks import fit_source
from nlsq_tasks.io import open_source

MODEL = "a*exp(-b*x) + c"
P0 = [1.0, 0.5, 0.0]
N, CHUNK = 20_000, 1500  # 14 chunks a pass


def _problem(seed=1):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, N)
    s = 0.05 * (1.0 + 0.5 * rng.random(N))
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + s * rng.standard_normal(N)
    return x, y, s


@pytest.fixture(scope="module")
def s3_data(s3_server):
    """The same data set on S3 as .npy (one record per point) and parquet (row groups of 2500)."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    options = s3_server.storage_options
    bucket = s3_server.make_bucket()
    fs = fsspec.filesystem("s3", **options)
    x, y, s = _problem()
    buf = io.BytesIO()
    np.save(buf, np.column_stack([x, y, s]))
    fs.pipe_file(f"{bucket}/d.npy", buf.getvalue())
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": x, "y": y, "sigma": s}), buf, row_group_size=2500)
    fs.pipe_file(f"{bucket}/d.parquet", buf.getvalue())
    return {"npy": (f"s3://{bucket}/d.npy", {"sigma_key": 2}),
            "parquet": (f"s3://{bucket}/d.parquet", {"sigma_key": "sigma"}), "options": options, "bucket": bucket}


def _source(s3_data, fmt):
    uri, keys = s3_data[fmt]
    return open_source(uri, chunk_size=CHUNK, storage_options=s3_data["options"], **keys)


def _fit(src, **kw):
    return fit_source(MODEL, src, p0=P0, strategy="streaming", absolute_sigma=True, **kw)


def _stream(src, pass_executor=None, progress=None):
    """The streaming driver itself, without the front door's warm start, so the fit takes
    several passes (adaptive trials: passes with K = 1 and K = 4 trial rows)."""
    import jax.numpy as jnp

    from nlsq_tasks.engine.options import SolverOptions
    from nlsq_tasks.engine.streaming import run_streaming
    from nlsq_tasks.workflow import StreamingConfig

    def model(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    return run_streaming(model, src, np.asarray(P0, float), np.array([0.0, 0.0, -1.0]), np.array([10.0, 5.0, 1.0]),
                         SolverOptions(), ["a", "b", "c"], config=StreamingConfig(chunk_size=CHUNK, warm_start=False),
                         progress=progress, executor=None if pass_executor is None else pass_executor.bind)


@pytest.fixture(scope="module")
def reference(s3_data):
    """The in-process (sequential) executor's answer, per format."""
    out = {fmt: _stream(_source(s3_data, fmt)) for fmt in ("npy", "parquet")}
    assert all(r.success and r.checkpoints["passes"] >= 5 for r in out.values())
    return out


def _assert_identical(res, ref):
    np.testing.assert_array_equal(res.popt, ref.popt)
    np.testing.assert_array_equal(res.pcov, ref.pcov)
    assert (res.cost, res.nit, res.nfev) == (ref.cost, ref.nit, ref.nfev)


def _on_dask(client, src, **kw):
    from nlsq_tasks.dask import DaskExecutor

    progress = kw.pop("progress", None)
    ex = DaskExecutor(client, **kw)
    try:
        return _stream(src, ex, progress), ex.record
    finally:
        ex.close()


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_dask_equals_sequential_bit_for_bit(client, s3_data, reference, fmt):
    res, e = _on_dask(client, _source(s3_data, fmt))
    ref = reference[fmt]
    _assert_identical(res, ref)
    assert e["n_workers"] == 2 and e["resident"] and "fit in 50%" in e["resident_reason"]
    n_chunks, passes = e["n_chunks"], res.checkpoints["passes"]
    assert n_chunks == 14 and len(e["pass_seconds"]) == passes
    stats = e["worker_stats"].values()
    assert len(stats) == 2 and all(s["tasks"] > 0 for s in stats)  # both workers evaluated chunks
    # every chunk read from S3 once, by a worker; later passes used the resident copies
    assert sum(s["reads"] for s in stats) == n_chunks and e["storage_reads"] == [n_chunks] + [0] * (passes - 1)
    assert sum(s["tasks"] for s in stats) == n_chunks * passes
    # the compiled chunk function is built once per worker (one variant per trial count K), not per task
    assert all(s["builds"] == 1 and 1 <= s["compiled"] <= 2 < s["tasks"] for s in stats)


def test_one_worker_without_residency_gives_the_same_bits(client, s3_data, reference):
    first = sorted(client.scheduler_info()["workers"])[0]
    res, e = _on_dask(client, _source(s3_data, "npy"), resident=False, workers=[first], groups_per_worker=3)
    _assert_identical(res, reference["npy"])
    assert e["n_workers"] == 1 and e["resident"] is False and "asked for" in e["resident_reason"]
    assert e["worker_stats"][first]["tasks"] == e["n_chunks"] * res.checkpoints["passes"]
    # not resident: every pass reads every chunk from storage again
    assert e["storage_reads"] == [e["n_chunks"]] * res.checkpoints["passes"]


def test_fit_source_on_dask_records_the_executor(client, s3_data):
    local = _fit(_source(s3_data, "parquet"))
    res = _fit(_source(s3_data, "parquet"), executor=client)
    _assert_identical(res, local)
    assert "executor" not in local.execution
    e = res.execution
    assert e["executor"] == f"dask:{client.scheduler.address}" and e["n_workers"] == 2 and e["pass_seconds"]
    assert res.summary()["execution"]["n_workers"] == 2
    assert "executor: dask:tcp://" in res.report()


def test_worker_killed_mid_pass_gives_the_same_answer(client, s3_data, reference):
    pids = client.run(os.getpid)
    victim = sorted(pids)[1]
    killed = []

    def progress(ev):
        if ev["phase"] == "pass" and ev["pass"] == 2 and ev["chunk"] == 1 and not killed:
            os.kill(pids[victim], signal.SIGKILL)  # the worker process dies with its tasks and chunks
            killed.append(victim)

    res, e = _on_dask(client, _source(s3_data, "npy"), progress=progress)
    assert killed, "the kill happened during the fit"
    _assert_identical(res, reference["npy"])
    client.wait_for_workers(2, timeout=120)  # the nanny restarted it
    assert set(client.run(os.getpid).values()) != set(pids.values())


def test_missing_object_fails_naming_chunk_and_uri(client, s3_server):
    import fsspec

    from nlsq_tasks.dask import ChunkReadError

    options = s3_server.storage_options
    bucket = s3_server.make_bucket()
    fs = fsspec.filesystem("s3", **options)
    x, y, s = _problem()
    buf = io.BytesIO()
    np.save(buf, np.column_stack([x, y, s]))
    fs.pipe_file(f"{bucket}/gone.npy", buf.getvalue())
    src = open_source(f"s3://{bucket}/gone.npy", sigma_key=2, chunk_size=CHUNK, storage_options=options)
    src.fingerprint()  # the driver identifies the data (and keeps that identity) before any pass
    fs.rm(f"{bucket}/gone.npy")  # gone after the driver opened it, before the workers read
    with pytest.raises(ChunkReadError) as err:
        _on_dask(client, src)
    msg = str(err.value)
    # a missing object is not transient: no retries, the chunk, its points and the URI named
    assert msg.startswith(f"chunk 0 (points 0..{CHUNK}) of s3://{bucket}/gone.npy: could not be read: "
                          "StorageNotFoundError"), msg
    assert options["secret"] not in msg and options["key"] not in msg


def test_transient_read_errors_are_retried_on_the_worker(tmp_path):
    """PassPlugin.read (what a worker runs) retries TransientStorageError and gives up
    after READ_ATTEMPTS, naming the chunk; the storage here is a real local .npy."""
    from nlsq_tasks.dask import ChunkReadError
    from nlsq_tasks.dask.worker import READ_ATTEMPTS, PassPlugin
    from nlsq_tasks.io import TransientStorageError

    x, y, s = _problem()
    np.save(tmp_path / "d.npy", np.column_stack([x, y, s]))
    src = open_source(str(tmp_path / "d.npy"), sigma_key=2, chunk_size=CHUNK)

    class Hiccups:  # the real source, whose first `fail` reads hit a transient error
        def __init__(self, fail):
            self.fail, self.calls = fail, 0

        def read_chunk(self, j):
            self.calls += 1
            if self.calls <= self.fail:
                raise TransientStorageError(f"could not read {src.uri}: transient storage error (SlowDown)")
            return src.read_chunk(j)

        def __getattr__(self, name):
            return getattr(src, name)

    flaky = Hiccups(fail=2)
    plugin = PassPlugin("t", None, flaky, 1.0, 16384)
    plugin.setup()
    chunk = plugin.read(3)
    np.testing.assert_array_equal(chunk.y, y[3 * CHUNK:4 * CHUNK])
    assert flaky.calls == 3 and plugin.reads == 1
    down = Hiccups(fail=READ_ATTEMPTS)
    plugin = PassPlugin("t", None, down, 1.0, 16384)
    with pytest.raises(ChunkReadError, match=rf"^chunk 5 \(points 7500..9000\) of .*d.npy: could not be read after "
                                             rf"{READ_ATTEMPTS} attempts: TransientStorageError"):
        plugin.read(5)
    assert down.calls == READ_ATTEMPTS


def test_quality_validation_runs_on_the_cluster_from_resident_chunks(client, s3_data):
    """validate=True on Dask: the residual pass and the perturbed re-fits are passes on the
    workers over the chunks they already hold (no further storage reads), and the report
    equals the local one."""
    local = _fit(_source(s3_data, "npy"), validate=True)
    res = _fit(_source(s3_data, "npy"), executor=client, validate=True)
    _assert_identical(res, local)
    assert [c.name for c in res.validation.checks] == [c.name for c in local.validation.checks]
    assert [c.value for c in res.validation.checks] == [c.value for c in local.validation.checks]
    e = res.execution
    assert e["other_passes"] > len(e["pass_seconds"])  # residual pass + 5 re-fits, several passes each
    assert e["chunks_read"] == e["n_chunks"]  # each chunk read from S3 once, for the fit and all its checks
