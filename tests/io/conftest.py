"""Fixtures for the I/O tests: one parametrized ``store`` fixture over the three back ends
(local files, ``memory://``, S3 through a real moto server on 127.0.0.1)."""

from __future__ import annotations

import pathlib
import sys
import uuid

import pytest

sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))  # tests/, for s3_server (last: shadows nothing)
from s3_server import s3_bucket, s3_server  # noqa: E402,F401  (fixtures)


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path):
    """``(base_uri, storage_options)`` of an empty location on each back end."""
    if request.param == "local":
        yield str(tmp_path), None
    elif request.param == "memory":
        import fsspec

        base = f"memory://nlsq-test-{uuid.uuid4().hex[:8]}"
        yield base, None
        fs = fsspec.filesystem("memory")
        if fs.exists(base):
            fs.rm(base, recursive=True)
    else:
        yield request.getfixturevalue("s3_bucket")

