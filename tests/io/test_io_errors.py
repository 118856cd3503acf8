"""Storage errors: missing bucket, wrong credentials, unreachable endpoint -- clear messages,
the right class (transient or not), and never a credential in a message or a repr."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from nlsq_tasks.io import (
    CheckpointStore,
    ResultStore,
    StorageError,
    StorageNotFoundError,
    StoragePermissionError,
    TransientStorageError,
    inspect_data,
    load_text,
    open_source,
    redact_options,
)
from nlsq_tasks.io._errors import scrub


def _no_secret(text: str, so: dict) -> None:
    assert so["secret"] not in text and so["key"] not in text


def test_missing_bucket_is_a_clear_not_found(s3_server):
    so = s3_server.storage_options
    for call in (
        lambda: inspect_data("s3://no-such-bucket-nlsq/data.npy", storage_options=so),
        lambda: open_source("s3://no-such-bucket-nlsq/data.npz", storage_options=so),
        lambda: load_text("s3://no-such-bucket-nlsq/preset.yaml", so),
        lambda: CheckpointStore("s3://no-such-bucket-nlsq/ckpt", storage_options=so).save({"a": 1}, fingerprint="f"),
        lambda: ResultStore("s3://no-such-bucket-nlsq/run", storage_options=so).write(_tiny_result()),
    ):
        with pytest.raises(StorageNotFoundError, match="the bucket 'no-such-bucket-nlsq' does not exist") as err:
            call()
        assert not isinstance(err.value, TransientStorageError)
        _no_secret(str(err.value), so)
    import fsspec

    assert not fsspec.filesystem("s3", **so).exists("no-such-bucket-nlsq")  # saving did not create it


def test_missing_object_is_not_found(s3_bucket):
    base, so = s3_bucket
    with pytest.raises(StorageNotFoundError, match=r"could not inspect s3://.*/nothing.csv: not found"):
        inspect_data(f"{base}/nothing.csv", storage_options=so)


def test_wrong_credentials_are_refused_without_leaking(s3_bucket, monkeypatch):
    base, so = s3_bucket
    import moto.settings

    # Turn on moto's IAM check (off by default): unknown access keys are then rejected.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    bad = {**so, "key": "AKIAWRONGKEY12345678", "secret": "wrong-secret-value-abcdefghijkl"}
    with pytest.raises(StoragePermissionError, match="access denied") as err:
        ResultStore(f"{base}/res", storage_options=bad).write(_tiny_result())
    with pytest.raises(StoragePermissionError) as err2:
        inspect_data(f"{base}/x.npy", storage_options=bad)
    for e in (err.value, err2.value):
        text = str(e) + repr(e) + "".join(map(str, e.args))
        _no_secret(text, bad)
        assert e.__cause__ is None and e.__suppress_context__
    cs = CheckpointStore(f"{base}/ck", storage_options=bad)
    _no_secret(repr(cs), bad)
    assert "'secret': '***'" in repr(cs) and "'key': '***'" in repr(cs)


def test_unreachable_endpoint_is_transient():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    so = {
        "key": "AKIAUNREACHABLE00001",
        "secret": "unreachable-secret-0123456789",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "eu-west-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        "skip_instance_cache": True,
    }
    with pytest.raises(TransientStorageError, match="transient storage error.*retrying may help") as err:
        inspect_data("s3://bucket/data.npy", storage_options=so)
    _no_secret(str(err.value), so)
    assert isinstance(err.value, StorageError) and isinstance(err.value, OSError)


def test_unknown_protocol_and_bad_option():
    with pytest.raises(StorageError, match="could not open nosuch://b/x.npy"):
        inspect_data("nosuch://b/x.npy")
    with pytest.raises(StorageError, match="storage_options rejected by the backend"):
        inspect_data(
            "s3://b/x.npy",
            storage_options={"key": "k-123", "secret": "hunter2-secret", "bogus_option": 1, "skip_instance_cache": True},
        )


def test_scrub_and_redact():
    so = {"key": "AKIAXX", "secret": "s3cr3t-value", "client_kwargs": {"aws_session_token": "tok-123"}, "anon": False}
    text = "failed for AKIAXX with s3cr3t-value and tok-123 at https://user:pw@host/x"
    out = scrub(text, so)
    assert out == "failed for *** with *** and *** at https://***@host/x"
    red = redact_options(so)
    assert red == {"key": "***", "secret": "***", "client_kwargs": {"aws_session_token": "***"}, "anon": False}
    assert so["secret"] == "s3cr3t-value"  # the caller's dict is untouched


def _tiny_result():
    from nlsq_tasks.engine.result import FitResult, FitStatistics
    from nlsq_tasks.engine.status import FitStatus

    return FitResult(
        popt=np.array([1.0]),
        pcov=np.array([[0.1]]),
        status=FitStatus.GTOL,
        nfev=1,
        njev=1,
        nit=1,
        cost=0.1,
        stats=FitStatistics(10, 1, 0.2, 0.2, 1.0),
        param_names=["a"],
        lower=np.array([-np.inf]),
        upper=np.array([np.inf]),
    )


def test_parquet_without_pyarrow_says_what_to_install(tmp_path):
    pytest.importorskip("pyarrow")
    import subprocess
    import sys

    from io_helpers import dataset, write

    x, y, s = dataset(n=10)
    uri, _ = write("parquet", str(tmp_path), None, x, y, s)
    code = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
        "from nlsq_tasks.io import inspect_data\n"
        f"inspect_data({uri!r})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "ImportError: reading parquet needs pyarrow: pip install 'nlsq-flows[parquet]'" in out.stderr
