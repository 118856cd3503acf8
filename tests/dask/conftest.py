"""Fixtures for the Dask executor tests: a real ``LocalCluster`` of 2 worker processes
(one thread each) on 127.0.0.1, shared by the module that asks for it, and the moto S3
server of tests/s3_server.py."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))  # tests/, for s3_server
from s3_server import s3_bucket, s3_server  # noqa: E402,F401  (fixtures)

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                      host="127.0.0.1") as cl:
        yield cl


@pytest.fixture()
def client(cluster):
    from distributed import Client

    with Client(cluster) as c:
        c.wait_for_workers(2, timeout=120)
        yield c
