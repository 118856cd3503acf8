"""S3 end to end (moto server on 127.0.0.1 through s3fs): data from s3://, checkpoints and
results to s3://; credentials never reach logs, artifacts, parameters or stored results;
a missing bucket fails the flow before anything is written."""

from __future__ import annotations

import io
import json

import fsspec
import numpy as np
import pytest

from flow_helpers import (
    TRUE,
    decay_arrays,
    failure_message,
    flow_run_artifacts,
    flow_run_logs,
    read_flow_run,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _put_npz(fs, path: str, n: int) -> None:
    x, y, s = decay_arrays(n)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y, sigma=s)
    fs.pipe_file(path, buf.getvalue())


def test_s3_streaming_fit_and_no_credentials_anywhere(s3_bucket):
    from prefect.logging.handlers import APILogHandler

    from flows import FitRequest, fit_flow

    prefix, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    _put_npz(fs, f"{prefix[5:]}/in/decay.npz", 3000)
    # a user's preset, fetched from S3 with the storage credentials
    fs.pipe_file(f"{prefix[5:]}/presets/mine.yaml",
                 b"name: s3-streaming\nstrategy: streaming\ntolerance: 1.0e-8\nchunk_size: 1000\n"
                 b"checkpoint:\n  enabled: true\n  every_chunks: 1\n")
    request = FitRequest.model_validate({
        "data": {"uri": f"{prefix}/in/decay.npz", "sigma": "sigma", "storage_options": options},
        "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0], "absolute_sigma": True,
        "preset": f"{prefix}/presets/mine.yaml",
        "storage_uri": f"{prefix}/runs/r1", "storage": {"storage_options": options}, "plot": True,
    })
    state = fit_flow(request, return_state=True)
    assert state.is_completed(), failure_message(state)
    out = state.result()
    assert out["strategy"] == "streaming" and "preset 's3-streaming'" in out["reason"]
    for name, true in zip("abc", TRUE):
        assert abs(out["params"][name] - true) < 0.05
    stored = fs.find(f"{prefix[5:]}/runs/r1")
    assert any(p.endswith("manifest.json") and "/runs/" in p for p in stored)
    assert any(p.endswith(".nlsqckpt") for p in stored), stored

    # -- the secret is nowhere: stored files, artifacts, logs, flow-run parameters, the return value
    secret, key = options["secret"], options["key"]
    blobs = {p: fs.cat_file(p) for p in stored}
    assert blobs and not [p for p, b in blobs.items() if secret.encode() in b or key.encode() in b]
    flow_run_id = state.state_details.flow_run_id
    for art in flow_run_artifacts(flow_run_id):
        text = json.dumps(art.data, default=str) + str(art.description)
        assert secret not in text and key not in text
    APILogHandler().flush()  # send what is queued before reading logs back
    logs = "\n".join(flow_run_logs(flow_run_id))
    assert logs and secret not in logs and key not in logs
    params = json.dumps(read_flow_run(flow_run_id).parameters, default=str)
    assert "storage_options" in params and secret not in params and key not in params
    assert secret not in json.dumps(out, default=str)


def test_missing_bucket_fails_before_the_fit(s3_server, decay_npz):
    from flows import FitRequest, fit_flow

    options = s3_server.storage_options
    request = FitRequest.model_validate({
        "data": {"uri": str(decay_npz)}, "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0],
        "storage_uri": "s3://no-such-bucket-nlsq/run", "storage": {"storage_options": options},
    })
    state = fit_flow(request, return_state=True)
    assert state.is_failed()
    msg = failure_message(state)
    assert "no-such-bucket-nlsq" in msg and "does not exist" in msg, msg
    assert options["secret"] not in msg
    # No fit task ran: the checks failed first.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert not [r for r in runs if r.name.startswith("fit-")]
    assert not fsspec.filesystem("s3", **options).exists("no-such-bucket-nlsq")


@pytest.fixture(scope="module")
def strict_s3():
    """A second moto server (own process, 127.0.0.1) that checks credentials: moto enforces
    IAM auth when INITIAL_NO_AUTH_ACTION_COUNT is 0, so a key it never issued is refused."""
    import os
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):  # bounded wait for the port
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the strict moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_wrong_credentials_fail_before_writing(strict_s3, decay_npz):
    from flows import FitRequest, fit_flow

    wrong = {"key": "AKIAWRONGKEY00000000", "secret": "wrong-secret-never-shown-42",
             "client_kwargs": {"endpoint_url": strict_s3, "region_name": "eu-west-1"},
             "config_kwargs": {"retries": {"max_attempts": 1}}}
    request = FitRequest.model_validate({
        "data": {"uri": str(decay_npz)}, "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0],
        "storage_uri": "s3://some-bucket/run", "storage": {"storage_options": wrong},
    })
    state = fit_flow(request, return_state=True)
    assert state.is_failed()
    msg = failure_message(state)
    assert "some-bucket" in msg and "access denied" in msg and "check the credentials" in msg, msg
    assert "wrong-secret-never-shown-42" not in msg


def test_batch_over_an_s3_glob(s3_bucket):
    from flows import BatchFitRequest, batch_fit_flow

    prefix, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    for i in range(2):
        _put_npz(fs, f"{prefix[5:]}/many/set{i}.npz", 1200)
    request = BatchFitRequest.model_validate({
        "data": {"glob": f"{prefix}/many/*.npz", "storage_options": options},
        "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0], "preset": "standard", "plot": False,
        "storage_uri": f"{prefix}/batch", "storage": {"storage_options": options},
    })
    state = batch_fit_flow(request, return_state=True)
    assert state.is_completed(), failure_message(state)
    out = state.result()
    from nlsq_tasks.io import read_table

    assert out["n_ok"] == 2 and out["table"].startswith(f"{prefix}/batch/runs/")  # the batch run's own directory
    table = read_table(out["table"], storage_options=options)
    assert list(table["dataset"]) == [f"{prefix}/many/set{i}.npz" for i in range(2)]
