"""Fixtures for the flow tests: one Prefect test harness for the whole session (its start
is the main cost), small data files, the moto S3 server of tests/s3_server.py.

Everything runs against real components: a temporary Prefect server on 127.0.0.1 with a
SQLite database (``prefect_test_harness``), local files and a moto S3 server on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# No telemetry or other outbound traffic from the temporary server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# This folder is named like the package under test; import the real package first (by
# the repository root) so that no sys.path change by another test folder can shadow it
# with tests/flows as a namespace package.
_REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_REPO))
import flows  # noqa: E402,F401

sys.path.append(str(_REPO / "tests"))  # for s3_server
from s3_server import s3_bucket, s3_server  # noqa: E402,F401  (pytest fixtures)
from flow_helpers import write_npz  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def decay_npz(tmp_path_factory) -> Path:
    """4000 points of 2.5*exp(-0.7x)+0.3 with noise 0.05 and a sigma column."""
    return write_npz(tmp_path_factory.mktemp("data") / "decay.npz", 4000)


