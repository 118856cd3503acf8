"""Task policies on the installed Prefect: retries only on transient storage errors, the
per-worker concurrency slot with and without a limit, throttled progress artifacts."""

from __future__ import annotations

import time
import uuid

import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_retry_only_on_transient_storage_errors():
    from prefect import flow, task

    from flows.tasks import _RETRYING, fit_data, retry_on_transient_storage
    from nlsq_tasks.io import StorageNotFoundError, TransientStorageError

    calls = {"transient": 0, "bad": 0}
    options = {**_RETRYING, "retry_delay_seconds": 0, "retry_jitter_factor": None}

    @task(**options)
    def flaky():
        calls["transient"] += 1
        if calls["transient"] < 3:
            raise TransientStorageError("connection reset by peer (simulated hiccup)")
        return "ok"

    @task(**options)
    def bad_input():
        calls["bad"] += 1
        raise StorageNotFoundError("no such bucket")

    @flow
    def run():
        a = flaky()
        b = bad_input(return_state=True)
        return a, b

    a, b = run()
    assert a == "ok" and calls["transient"] == 3  # two retries, then success
    assert b.is_failed() and calls["bad"] == 1  # no retry on a non-transient error
    assert fit_data.retries == 3 and fit_data.retry_condition_fn is retry_on_transient_storage


def test_worker_slot_without_a_limit_does_not_block():
    from prefect import flow

    from flows.tasks import worker_slot

    @flow
    def use_slot():
        t0 = time.perf_counter()
        with worker_slot():
            pass
        return time.perf_counter() - t0

    assert use_slot() < 30  # no limit configured: Prefect skips acquisition with a warning


def test_worker_slot_is_held_while_inside(monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    import flows.tasks as T

    name = f"nlsq-gpu-test-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(T, "worker_slot_name", lambda: name)
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))

    def active() -> int:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(name).active_slots

    @flow
    def use_slot():
        with T.worker_slot():
            inside = active()
        return inside

    assert use_slot() == 1
    assert active() == 0


def test_progress_reporter_throttles_and_finishes():
    from prefect import flow

    from flows.progress import ProgressReporter, describe

    @flow
    def report():
        rep = ProgressReporter(key="nlsq-test-progress", max_passes=2, min_interval=60.0)
        for j in range(50):
            rep({"phase": "pass", "pass": 1, "chunk": j, "n_chunks": 50, "cost": 1.0 / (j + 1), "nit": 0})
        rep.finish("FTOL")
        return rep.events, rep.updates, rep._artifact_id

    events, updates, artifact_id = report()
    assert events == 50 and updates == 1  # first event published, the rest throttled
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        art = client.read_artifacts(limit=200)
    mine = [a for a in art if a.id == artifact_id]
    assert mine and float(mine[0].data) == 100.0
    assert mine[0].description == "FTOL after 2 passes of at most 3, cost 0.02", mine[0].description
    assert describe({"phase": "pass", "pass": 3, "chunk": 1, "n_chunks": 4, "cost": 2.0, "nit": 2}) == \
        "pass 3, chunk 2/4, cost 2, iteration 2"


def test_storage_options_from_a_secret_block():
    """Deployments name a Prefect Secret block; the options are read inside the run only."""
    from prefect.blocks.system import Secret

    from flows.request import StorageCredentials

    name = f"nlsq-test-creds-{uuid.uuid4().hex[:6]}"
    Secret(value='{"key": "AKIABLOCK", "secret": "from-the-block", "anon": false}').save(name)
    creds = StorageCredentials.model_validate({"storage_options": {"key": "inline", "region": "eu"},
                                               "storage_options_block": name})
    assert creds.resolved_options() == {"key": "AKIABLOCK", "secret": "from-the-block", "anon": False, "region": "eu"}
    assert "from-the-block" not in creds.model_dump_json()
    with pytest.raises(ValueError, match="storage_options_block"):
        StorageCredentials.model_validate({"storage_options_block": "Not A Valid Name"})
