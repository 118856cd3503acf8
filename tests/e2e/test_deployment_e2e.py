"""End to end, as a user deploys and runs it: a real Prefect server, the `prefect` CLI,
infra/prefect.yaml, a process worker, and flow runs triggered through the API.

One server serves the whole module (starting it is the slow part). The three work pools
are created with the commands infra/README.md gives, the GPU pools from the JSON
templates, so the server validates those templates and every GPU deployment's
job_variables against them; only the process pool gets a worker (no GPU, no Docker here).

The worker starts in a directory other than the repository, so a completed run also
proves the deployments' pull step (set_working_directory) is what locates the code.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
import yaml

from _prefect_stack import REPO, PrefectStack

pytestmark = pytest.mark.e2e

PREFECT_YAMLS = [REPO / "infra" / "prefect.yaml", REPO / "infra" / "prefect-gpu.yaml"]
LOCAL_POOL = "nlsq-local"
GPU_POOLS = {
    "nlsq-docker-gpu": ("docker", REPO / "infra" / "work-pools" / "docker-gpu.json"),
    "nlsq-k8s-gpu": ("kubernetes", REPO / "infra" / "work-pools" / "kubernetes-gpu.json"),
}
RUN_TIMEOUT_S = 420  # a fresh flow-run process imports prefect and jax and compiles on 2 shared cores
TRUTH = {"amplitude": 2.5, "rate": 1.3, "offset": 0.5}
NOISE = 0.01


def _flow_names() -> dict[str, str]:
    # entrypoint function -> @flow(name=...) as registered with the server
    from flows.batch_flow import batch_fit_flow
    from flows.fit_flow import fit_flow

    return {"fit_flow": fit_flow.name, "batch_fit_flow": batch_fit_flow.name}


def _declared_deployments() -> list[dict]:
    return [d for path in PREFECT_YAMLS for d in yaml.safe_load(path.read_text())["deployments"]]


def _qualified(dep: dict, flow_names: dict[str, str]) -> str:
    return f"{flow_names[dep['entrypoint'].rsplit(':', 1)[1]]}/{dep['name']}"


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _wait_final(client, flow_run_id: UUID, timeout: float = RUN_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1.0)
    raise AssertionError(f"flow run {flow_run_id} not finished after {timeout}s; last state {run.state!r}")


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.fixture(scope="module")
def deployed(prefect_stack: PrefectStack, tmp_path_factory):
    """Pools created and every deployment of infra/prefect.yaml applied, a process worker polling."""
    st = prefect_stack
    st.cli("work-pool", "create", LOCAL_POOL, "--type", "process")
    for name, (kind, template) in GPU_POOLS.items():
        st.cli("work-pool", "create", name, "--type", kind, "--base-job-template", str(template))
    # Exactly the README's commands, from the repository root: local, then GPU deployments.
    st.cli("--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml")
    st.cli("--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect-gpu.yaml")
    worker_cwd = tmp_path_factory.mktemp("worker-cwd")
    worker = st.start_service("worker", "worker", "start", "--pool", LOCAL_POOL, "--type", "process", cwd=worker_cwd)
    time.sleep(1.0)
    assert worker.alive(), "the process worker exited right after start"
    return st


@pytest.fixture(scope="module")
def decay_data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(20261124)
    x = np.linspace(0.0, 5.0, 4000)
    y = TRUTH["amplitude"] * np.exp(-TRUTH["rate"] * x) + TRUTH["offset"] + rng.normal(0.0, NOISE, x.size)
    path = tmp_path_factory.mktemp("data") / "decay.npz"
    np.savez(path, x=x, y=y)
    return path


def test_every_declared_deployment_is_registered_as_declared(deployed):
    flow_names = _flow_names()
    declared = _declared_deployments()
    with deployed.client() as client:
        for dep in declared:
            got = client.read_deployment_by_name(_qualified(dep, flow_names))
            assert got.work_pool_name == dep["work_pool"]["name"]
            assert got.parameters == dep["parameters"], got.name
            assert got.enforce_parameter_schema is True, got.name
            # the parameter form the UI renders comes from the flow's pydantic request
            assert "request" in got.parameter_openapi_schema["properties"], got.name
            for sched in got.schedules:
                assert sched.active is False, f"{got.name}: example schedules must start inactive"
            assert len(got.schedules) == len(dep.get("schedules") or [])
            if got.work_pool_name == LOCAL_POOL:
                # the pull step carries the directory `prefect deploy` ran in: the repo root
                (step,) = got.pull_steps
                directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
                assert Path(directory).resolve() == REPO.resolve()
            else:
                assert got.job_variables.get("gpu_count") == dep["work_pool"]["job_variables"]["gpu_count"]


def test_fit_run_from_the_api_completes_with_results_and_artifacts(deployed, decay_data, tmp_path):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.utilities.schema_tools import validate
    from scipy.optimize import curve_fit

    storage = tmp_path / "fit-out"
    with deployed.client() as client:
        deployment = client.read_deployment_by_name(f"{_flow_names()['fit_flow']}/fast")
        # The UI form starts from the deployment's parameters (the preset) and the user
        # fills in the rest; the whole form is sent as the run's parameters.
        parameters = _deep_merge(
            deployment.parameters,
            {"request": {"model": "exponential_decay", "data": {"uri": str(decay_data)},
                         "advanced": {"storage_uri": str(storage)}}},
        )
        assert validate(parameters, deployment.parameter_openapi_schema, raise_on_error=True) == []
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        run = _wait_final(client, run.id)
        assert run.state.is_completed(), f"{run.state.type}: {run.state.message}"

        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))

    # -- stored results: manifest first, and every file it lists matches its checksum
    (results,) = list((storage / "runs").iterdir())  # the run's own directory
    manifest = json.loads((results / "manifest.json").read_text())
    assert {"summary.json", "params.npz", "report.txt"} <= set(manifest["files"])
    for name, meta in manifest["files"].items():
        blob = (results / name).read_bytes()
        assert len(blob) == meta["size"] and hashlib.sha256(blob).hexdigest() == meta["sha256"], name

    summary = json.loads((results / "summary.json").read_text())
    assert summary["success"] is True, summary["message"]
    assert summary["workflow"] == "fast"  # the preset came from the deployment's defaults
    with np.load(decay_data) as d:
        x, y = d["x"], d["y"]
    ref, _ = curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1.0, 1.0, 0.0])
    popt = np.array(summary["popt"])
    np.testing.assert_allclose(popt, ref, rtol=1e-5, atol=1e-6)
    for name, p in summary["params"].items():
        assert abs(p["value"] - TRUTH[name]) < 6 * p["stderr"], (name, p)

    # -- artifacts as the UI lists them: keys name the deployment and the data set
    by_key = {art.key: art for art in artifacts}
    keys = {"nlsq-params-fast-decay", "nlsq-report-fast-decay", "nlsq-plot-fast-decay"}
    assert keys <= set(by_key), sorted(by_key)
    table = by_key["nlsq-params-fast-decay"]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [r["parameter"] for r in rows] == list(TRUTH)
    assert float(rows[1]["value"]) == pytest.approx(summary["params"]["rate"]["value"], rel=1e-8)
    report = by_key["nlsq-report-fast-decay"]
    assert report.type == "markdown" and summary["status"] in report.data
    assert "](data:image/png;base64," in report.data and str(results) in report.data  # the plot shows inline


def test_bad_request_fails_with_a_clear_message_and_writes_nothing(deployed, decay_data, tmp_path):
    storage = tmp_path / "bad-out"
    with deployed.client() as client:
        deployment = client.read_deployment_by_name(f"{_flow_names()['fit_flow']}/fast")
        request = _deep_merge(
            deployment.parameters["request"],
            {
                # schema-valid (a string), but the expression reaches for a module attribute
                "model": "expression",
                "expression": "a*exp(-b*x) + c + os.getcwd()",
                "data": {"uri": str(decay_data)},
                "advanced": {"storage_uri": str(storage)},
            },
        )
        # The UI's JSON editor sends a parameter as {"__prefect_kind": "json", "value": "<text>"};
        # the server hydrates it before validating against the schema.
        parameters = {"request": {"__prefect_kind": "json", "value": json.dumps(request)}}
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        run = _wait_final(client, run.id)

    assert run.state.is_failed(), f"{run.state.type}: {run.state.message}"
    message = run.state.message or ""
    assert "model" in message and "os.getcwd" in message, message
    assert _files_under(storage) == [], "a rejected request must not write results"


def test_batch_deployment_fits_a_glob_and_reports_the_bad_file(deployed, decay_data, tmp_path):
    # The request has the shape of the nightly example schedule: a glob over a folder.
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a_good.npz").write_bytes(decay_data.read_bytes())
    with np.load(decay_data) as d:
        np.savez(folder / "b_no_y.npz", x=d["x"], signal=d["y"])  # no "y" member
    storage = tmp_path / "batch-out"
    with deployed.client() as client:
        deployment = client.read_deployment_by_name(f"{_flow_names()['batch_fit_flow']}/batch")
        parameters = _deep_merge(deployment.parameters, {"request": {
            "model": "exponential_decay", "data": {"glob": str(folder / "*.npz")},
            "advanced": {"storage_uri": str(storage), "plot": False},
        }})
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        run = _wait_final(client, run.id)
        assert run.state.is_completed(), f"{run.state.type}: {run.state.message}"
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))

    # one table for the whole batch; the bad file is a row with its error, and the run says so
    assert run.state.name == "Completed with failures" and "1 of 2 data sets failed" in (run.state.message or "")
    from nlsq_tasks.io import read_table

    (run_dir,) = list((storage / "runs").iterdir())  # the batch run's own directory
    fits = read_table(str(run_dir / "fits.parquet"))
    by_file = {Path(d).name: i for i, d in enumerate(fits["dataset"])}
    good, bad = by_file["a_good.npz"], by_file["b_no_y.npz"]
    assert fits["success"][good] and fits["status"][good] in ("FTOL", "XTOL", "GTOL", "FTOL_XTOL")
    assert not fits["success"][bad] and "'y'" in fits["error"][bad]  # names the missing member
    (table,) = [a for a in artifacts if a.key == "nlsq-batch-batch"]  # per deployment: nlsq-batch-<deployment>
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert Path(rows[0]["dataset"]).name == "b_no_y.npz" and "'y'" in rows[0]["error"]  # failures first
