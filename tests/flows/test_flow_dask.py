"""Flows on Dask (a real LocalCluster of 2 worker processes on 127.0.0.1): the fit flow's
passes on the cluster, chosen in the request, planned and recorded; and the batch flow's
fit tasks on a prefect-dask DaskTaskRunner."""

from __future__ import annotations

import numpy as np
import pytest

from flow_helpers import TRUE, failure_message

pytest.importorskip("prefect_dask")
pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                      host="127.0.0.1") as cl:
        yield cl


def test_fit_flow_runs_its_passes_on_dask(cluster, decay_npz, tmp_path):
    from flows import FitRequest, fit_flow

    address = cluster.scheduler_address
    base = {"data": {"uri": str(decay_npz), "sigma": "sigma"}, "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0],
            "absolute_sigma": True, "plot": False, "overrides": {"strategy": "streaming", "chunk_size": 1000}}
    local = fit_flow(FitRequest.model_validate({**base, "storage_uri": str(tmp_path / "local")}))
    state = fit_flow(FitRequest.model_validate({**base, "storage_uri": str(tmp_path / "dask"), "executor": address}),
                     return_state=True)
    assert state.is_completed(), failure_message(state)
    out = state.result()
    for name, true in zip("abc", TRUE):
        assert abs(out["params"][name] - true) < 0.05
    assert out["params"] == local["params"]  # the same bits as the local passes
    assert f"executor {address}" in out["reason"] and "resident" in out["reason"]
    from nlsq_tasks.io import read_result

    stored = read_result(out["uris"]["results_dir"])
    execution = stored.execution if hasattr(stored, "execution") else stored["summary"]["execution"]
    assert execution["executor"] == f"dask:{address}" and execution["n_workers"] == 2 and execution["resident"]


def test_request_refuses_an_unknown_executor():
    from pydantic import ValidationError

    from flows import BatchFitRequest, FitRequest

    with pytest.raises(ValidationError) as err:
        FitRequest.model_validate({"data": {"uri": "x.npy"}, "model": "gaussian", "executor": "spark://x"})
    msg = str(err.value)
    assert "executor" in msg and "'spark://x'" in msg and "local-cluster:N" in msg
    # the UI form (the request's JSON schema) offers the field, with its choices described
    for model in (FitRequest, BatchFitRequest):
        field = model.model_json_schema()["$defs"]["AdvancedSettings"]["properties"]["executor"]  # advanced section
        assert field["default"] == "local" and "local-cluster:2" in field["examples"]
        assert "scheduler address" in field["description"]
    assert FitRequest.model_validate({"data": {"uri": "x.npy"}, "model": "gaussian",
                                      "executor": " Local-Cluster:3 "}).executor == "local-cluster:3"


def test_batch_flow_runs_its_fit_tasks_on_a_dask_task_runner(cluster, tmp_path):
    from distributed import Client, get_task_stream

    from flow_helpers import write_npz
    from flows import BatchFitRequest, batch_fit_flow
    from nlsq_tasks.io import read_table

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_npz(data / f"run{i}.npz", 300, seed=i)
    request = BatchFitRequest.model_validate({
        "data": {"glob": str(data / "*.npz")}, "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0],
        "preset": "standard", "plot": False, "storage_uri": str(tmp_path / "out"), "batch_size": 1,
        "executor": cluster.scheduler_address,
    })
    with Client(cluster) as client, get_task_stream(client) as stream:
        state = batch_fit_flow(request, return_state=True)
    assert state.is_completed(), failure_message(state)
    out = state.result()
    assert (out["n_datasets"], out["n_ok"], out["n_batches"]) == (3, 3, 3)
    np.testing.assert_allclose(read_table(out["table"])["b"], 0.7, atol=0.05)
    # the three fit-batch tasks ran on the cluster's workers (the task stream lists what they ran)
    ran = [t["key"] for t in stream.data]
    assert sum(str(k).startswith("fit_batch_task-") for k in ran) == 3, ran


def test_cli_executor_flags_reach_the_requests(capsys):
    """`nlsq-flow run/batch --executor ...` build requests naming it; a bad choice exits 2 naming it."""
    from flows.cli import _build_request, _parser, main
    from flows.cli_batch import build_request

    args = _parser().parse_args(["run", "--data", "x.npz", "--model", "a*x", "--executor", "tcp://h:8786"])
    assert _build_request(args).executor == "tcp://h:8786"
    args = _parser().parse_args(["batch", "--data", "x/*.npz", "--model", "a*x", "--executor", "local-cluster:2"])
    assert build_request(args).executor == "local-cluster:2"

    assert main(["batch", "--data", "x/*.npz", "--model", "a*x", "--executor", "spark://h:1"]) == 2
    assert "executor" in capsys.readouterr().err
    assert main(["run", "--data", "x.npz", "--model", "a*x", "--executor", "local-cluster:0"]) == 2
    err = capsys.readouterr().err
    assert "executor" in err and "local-cluster:0" in err
