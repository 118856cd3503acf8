"""Storage faults (issue 14, item 5) against a real S3 endpoint (moto on 127.0.0.1) behind a
small TCP proxy that stalls, answers 503 SlowDown, or is not there (connection refused):
every call has a timeout, transient faults are retried with backoff, permanent ones fail at
once, and the budget is the caller's (storage_retries / storage_timeout_s in requests)."""

from __future__ import annotations

import socket
import threading
import uuid

import numpy as np
import pytest

from nlsq_tasks.io import StorageNotFoundError, TransientStorageError, inspect_data, read_bytes
from nlsq_tasks.io.retry import RetryBudget, retry_budget

STALL_LIMIT_S = 30.0  # a stalled connection is closed after this: a broken timeout fails, never hangs

_503 = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: 96\r\n\r\n"
        b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".ljust(96))


class FaultProxy:
    """Forwards 127.0.0.1:<port> to the moto server; the first connections get faults."""

    def __init__(self, target_port: int, faults: list[str]):
        self.target = target_port
        self.faults = list(faults)  # "stall" or "503", one per new connection, then "pass"
        self.served: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self._lock:
                fault = self.faults.pop(0) if self.faults else "pass"
                self.served.append(fault)
            threading.Thread(target=self._handle, args=(conn, fault), daemon=True).start()

    def _handle(self, conn, fault):
        with conn:
            if fault == "stall":
                conn.settimeout(STALL_LIMIT_S)
                try:
                    while conn.recv(65536):  # take the request, never answer
                        pass
                except OSError:
                    pass
                return
            if fault == "503":
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(_503)
                except OSError:
                    pass
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            with up:
                def pump(a, b):
                    try:
                        while True:
                            data = a.recv(65536)
                            if not data:
                                break
                            b.sendall(data)
                    except OSError:
                        pass
                    finally:
                        for s in (a, b):
                            try:
                                s.shutdown(socket.SHUT_RDWR)
                            except OSError:
                                pass

                t = threading.Thread(target=pump, args=(up, conn), daemon=True)
                t.start()
                pump(conn, up)
                t.join(timeout=STALL_LIMIT_S)

    def close(self):
        self._stop.set()
        self.sock.close()


@pytest.fixture()
def seeded(s3_server):
    """A bucket holding a small npz, written directly to moto (no proxy)."""
    import io

    import fsspec

    bucket = s3_server.make_bucket()
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(50.0), y=np.arange(50.0) * 2)
    fsspec.filesystem("s3", **s3_server.storage_options).pipe_file(f"{bucket}/d.npz", buf.getvalue())
    return bucket


def _plain_options(s3_server, endpoint):
    return {"key": s3_server.options()["key"], "secret": s3_server.options()["secret"],
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"}, "skip_instance_cache": True}


def test_a_stalled_endpoint_times_out_and_the_retry_succeeds(s3_server, seeded):
    proxy = FaultProxy(s3_server.port, ["stall"])
    try:
        with retry_budget(retries=3, timeout_s=1.0, backoff_s=0.05):
            info = inspect_data(f"s3://{seeded}/d.npz", storage_options=_plain_options(s3_server, proxy.endpoint))
        assert info.n_points == 50
        assert proxy.served[0] == "stall" and "pass" in proxy.served  # timed out, then a new connection
    finally:
        proxy.close()


def test_throttling_and_5xx_are_retried_with_backoff(s3_server, seeded):
    proxy = FaultProxy(s3_server.port, ["503", "503"])
    try:
        with retry_budget(retries=4, timeout_s=5.0, backoff_s=0.05):
            blob = read_bytes(f"s3://{seeded}/d.npz", _plain_options(s3_server, proxy.endpoint))
        assert blob[:2] == b"PK" and proxy.served[:2] == ["503", "503"]
    finally:
        proxy.close()


def test_a_refused_connection_is_transient_retried_then_reported_with_the_budget(s3_server, seeded):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connection refused
    with retry_budget(retries=2, timeout_s=2.0, backoff_s=0.01), pytest.raises(TransientStorageError) as err:
        read_bytes(f"s3://{seeded}/d.npz", _plain_options(s3_server, f"http://127.0.0.1:{port}"))
    msg = str(err.value)
    assert "gave up after 3 attempt(s)" in msg and "storage_retries=2" in msg, msg
    assert s3_server.options()["secret"] not in msg


def test_a_permanent_fault_is_not_retried(s3_server, seeded):
    proxy = FaultProxy(s3_server.port, [])
    try:
        with retry_budget(retries=5, timeout_s=5.0, backoff_s=0.5), pytest.raises(StorageNotFoundError) as err:
            read_bytes(f"s3://{seeded}/missing.npz", _plain_options(s3_server, proxy.endpoint))
        assert "gave up" not in str(err.value)
    finally:
        proxy.close()


def test_http_connection_refused_is_transient_not_not_found():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with retry_budget(retries=1, timeout_s=2.0, backoff_s=0.01), pytest.raises(TransientStorageError) as err:
        read_bytes(f"http://127.0.0.1:{port}/data.csv")
    assert "not found" not in str(err.value) and "gave up after 2 attempt(s)" in str(err.value)


def test_budget_is_validated():
    with pytest.raises(ValueError, match="retries=-1"):
        RetryBudget(retries=-1)
    with pytest.raises(ValueError, match="timeout_s=0"):
        RetryBudget(timeout_s=0)
