"""A real S3 endpoint for tests: moto in server mode on 127.0.0.1, reached through s3fs.

Importable by any test package. In a ``conftest.py``::

    import sys, pathlib
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))  # the tests/ folder
    from s3_server import s3_server, s3_bucket  # noqa: F401  (pytest fixtures)

then use ``s3_server`` (session-scoped :class:`MotoS3`: ``.endpoint``, ``.storage_options``,
``.make_bucket()``) and ``s3_bucket`` (a fresh, empty bucket per test; yields
``(uri_prefix, storage_options)``, e.g. ``("s3://b-1a2b3c4d", {...})``).

Outside pytest: ``with MotoS3() as s3: ...``. Fake credentials live only in the
``storage_options`` (never in the environment), the server binds 127.0.0.1 on a free port,
and nothing leaves the machine. Flask/werkzeug request logging is silenced.
"""

from __future__ import annotations

import logging
import uuid

import pytest

REGION = "eu-west-1"  # not us-east-1: s3fs sends a LocationConstraint that us-east-1 rejects
FAKE_KEY = "AKIANLSQTESTKEY00001"
FAKE_SECRET = "nlsq-fake-secret-do-not-print-0123456789"


class MotoS3:
    """A ThreadedMotoServer on 127.0.0.1 and matching s3fs storage_options."""

    def __init__(self, port: int = 0):
        self.port = port
        self._server = None
        self.endpoint = ""

    def start(self) -> "MotoS3":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server._server.server_port  # the port the OS gave for port=0
        self.endpoint = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "MotoS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def options(self, key: str = FAKE_KEY, secret: str = FAKE_SECRET, **extra) -> dict:
        """s3fs storage_options for this server (``key``/``secret`` overridable)."""
        return {
            "key": key,
            "secret": secret,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION},
            "config_kwargs": {"retries": {"max_attempts": 2}},
            **extra,
        }

    @property
    def storage_options(self) -> dict:
        return self.options()

    def make_bucket(self, name: str | None = None) -> str:
        import fsspec

        name = name or f"b-{uuid.uuid4().hex[:8]}"
        fsspec.filesystem("s3", **self.storage_options).mkdir(name)
        return name


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    with MotoS3() as server:
        yield server


@pytest.fixture()
def s3_bucket(s3_server):
    name = s3_server.make_bucket()
    yield f"s3://{name}", s3_server.storage_options
