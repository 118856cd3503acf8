"""batch_fit_flow: many data sets, bounded concurrency, one bad data set loses none of the others."""

from __future__ import annotations

import json

import pytest

from flow_helpers import failure_message, flow_run_artifacts, write_npz

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_batch_with_one_bad_dataset(tmp_path):
    from flows import BatchFitRequest, batch_fit_flow

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_npz(data / f"run{i}.npz", 1500, seed=i)
    (data / "run9.npz").write_bytes(b"not an npz")  # matched by the glob, unreadable
    request = BatchFitRequest.model_validate({
        "data": {"glob": str(data / "*.npz"), "uris": [str(data / "run0.npz")]},  # duplicate dropped
        "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0], "preset": "standard", "plot": False,
        "storage_uri": str(tmp_path / "out"), "max_concurrency": 2,
    })
    state = batch_fit_flow(request, return_state=True)
    assert state.is_completed(), failure_message(state)
    out = state.result()
    assert (out["n_datasets"], out["n_ok"], out["n_failed"]) == (3, 2, 1)
    bad = [o for o in out["outcomes"] if not o["ok"]]
    assert bad[0]["uri"].endswith("run9.npz") and "not a readable npz" in bad[0]["error"]
    for o in out["outcomes"]:
        if o["ok"]:
            manifest = json.loads(open(o["uris"]["results_dir"] + "/manifest.json").read())
            assert manifest["success"]
    # nothing was written for the bad data set
    assert not any("run9" in p.name for p in (tmp_path / "out").iterdir())

    # bounded concurrency: never more than max_concurrency fit-dataset task runs at once
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    spans = [(r.start_time, r.end_time) for r in runs if r.name.startswith("fit-dataset")]
    assert len(spans) == 3
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2

    arts = {a.key: a for a in flow_run_artifacts(state.state_details.flow_run_id)}
    table = arts["nlsq-batch-summary"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [r["state"] for r in rows].count("failed") == 1
    assert any("not a readable npz" in r["error"] for r in rows)


def test_batch_needs_something_to_fit():
    from pydantic import ValidationError

    from flows import BatchFitRequest

    with pytest.raises(ValidationError, match="uris or a glob"):
        BatchFitRequest.model_validate({"data": {}, "model": "a*x + b"})
