"""batch_fit_flow: batches of compiled fits, one table, failures as rows, few task runs."""

from __future__ import annotations

import json

import time

import numpy as np
import pytest

from flow_helpers import failure_message, flow_run_artifacts, write_npz

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs, offset = [], 0
        for _ in range(100):  # bounded paging
            page = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                         limit=200, offset=offset)
            runs += page
            if len(page) < 200:
                break
            offset += 200
    return runs


def test_files_with_one_unreadable_become_one_table(tmp_path):
    from flows import BatchFitRequest, batch_fit_flow
    from nlsq_tasks.io import read_table

    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        write_npz(data / f"run{i}.npz", 300, seed=i)
    (data / "run9.npz").write_bytes(b"not an npz")  # matched by the glob, unreadable
    request = BatchFitRequest.model_validate({
        "data": {"glob": str(data / "*.npz"), "uris": [str(data / "run0.npz")]},  # duplicate dropped
        "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0], "preset": "standard", "plot": False,
        "storage_uri": str(tmp_path / "out"), "max_concurrency": 2, "batch_size": 2,
    })
    state = batch_fit_flow(request, return_state=True)
    # partial failure is visible in the final state itself
    assert state.is_completed() and state.name == "Completed with failures", failure_message(state)
    assert "1 of 6 data sets failed" in state.message
    out = state.result()
    assert (out["n_datasets"], out["n_ok"], out["n_failed"], out["n_batches"]) == (6, 5, 1, 3)
    table = read_table(out["table"])
    assert [u.rsplit("/", 1)[-1] for u in table["dataset"]] == [f"run{i}.npz" for i in (0, 1, 2, 3, 4, 9)]
    assert list(table["success"]) == [True] * 5 + [False]
    assert "not a readable npz" in table["error"][5] and table["status"][5] == "INVALID_INPUT"
    np.testing.assert_allclose(table["b"][:5], 0.7, atol=0.05)  # flow_helpers' true rate

    # bounded concurrency: never more than max_concurrency fit-batch task runs at once
    runs = _task_runs(state.state_details.flow_run_id)
    spans = [(r.start_time, r.end_time) for r in runs if r.name.startswith("fit-batch")]
    assert len(spans) == 3
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 2

    arts = {a.key: a for a in flow_run_artifacts(state.state_details.flow_run_id)}
    rows = arts["nlsq-batch-local"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert rows[0]["status"] == "INVALID_INPUT" and "not a readable npz" in rows[0]["error"]


def test_ten_thousand_datasets_make_a_bounded_number_of_task_runs(tmp_path):
    """A stack of 1e4 small data sets: 96 batch tasks, one table of 1e4 rows."""
    from flows import BatchFitRequest, batch_fit_flow
    from nlsq_tasks.io import read_table

    rng = np.random.default_rng(0)
    k, n = 10_000, 16
    x = np.linspace(0.0, 3.0, n)
    rate = rng.uniform(0.5, 1.5, k)
    y = 2.0 * np.exp(-rate[:, None] * x) + 0.01 * rng.standard_normal((k, n))
    y[7, :] = np.nan  # one data set that cannot be fitted (check_finite)
    np.savez(tmp_path / "stack.npz", x=x, y=y)
    request = BatchFitRequest.model_validate({
        "data": {"stack": str(tmp_path / "stack.npz")}, "model": "a*exp(-b*x)", "p0": [1.0, 1.0],
        "plot": False, "storage_uri": str(tmp_path / "out"), "max_concurrency": 4,
    })
    state = batch_fit_flow(request, return_state=True)
    assert state.is_completed(), failure_message(state)
    out = state.result()
    assert out["n_batches"] == 96 and (out["n_ok"], out["n_failed"]) == (k - 1, 1)
    # Prefect records task runs asynchronously (events): read until all 96 are there, bounded
    deadline = time.monotonic() + 60
    runs = _task_runs(state.state_details.flow_run_id)
    while sum(r.name.startswith("fit-batch") for r in runs) < 96 and time.monotonic() < deadline:
        time.sleep(1.0)
        runs = _task_runs(state.state_details.flow_run_id)
    assert len(runs) <= 100, sorted({r.name for r in runs})
    assert sum(r.name.startswith("fit-batch") for r in runs) == 96
    table = read_table(out["table"])
    assert len(table["dataset"]) == k and table["dataset"][7] == "stack.npz[7]" and not table["success"][7]
    assert "NaN" in table["error"][7]
    ok = np.asarray(table["success"], bool)
    np.testing.assert_allclose(np.asarray(table["b"])[ok], rate[ok], rtol=0.05)


def test_global_fit_request(tmp_path):
    from flows import BatchFitRequest, batch_fit_flow

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_npz(data / f"run{i}.npz", 200, seed=10 + i)
    request = BatchFitRequest.model_validate({
        "data": {"glob": str(data / "*.npz")}, "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0],
        "plot": False, "storage_uri": str(tmp_path / "out"), "global_shared": ["b"],
    })
    state = batch_fit_flow(request, return_state=True)
    assert state.is_completed(), failure_message(state)
    out = state.result()
    assert out["global"] and out["success"]
    names = list(out["summary"]["params"])
    assert names[0] == "b" and names[1:] == ["a[0]", "c[0]", "a[1]", "c[1]", "a[2]", "c[2]"]
    assert abs(out["summary"]["params"]["b"]["value"] - 0.7) < 0.02
    assert "[[Shared parameters]]" in out["report"]


def test_batch_needs_something_to_fit():
    from pydantic import ValidationError

    from flows import BatchFitRequest

    with pytest.raises(ValidationError, match="uris, a glob or a stack"):
        BatchFitRequest.model_validate({"data": {}, "model": "a*x + b"})
    with pytest.raises(ValidationError, match="not both"):
        BatchFitRequest.model_validate({"data": {"stack": "s.npz", "uris": ["a.npz"]}, "model": "a*x + b"})


def test_batch_slices():
    from flows.batch_flow import batch_slices

    assert len(batch_slices(10_000, None)) == 96
    assert batch_slices(250, None) == [(0, 100), (100, 200), (200, 250)]
    assert batch_slices(5, 2) == [(0, 2), (2, 4), (4, 5)]
