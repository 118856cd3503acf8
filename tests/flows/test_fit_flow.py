"""fit_flow against a real temporary Prefect server: the three branches, stored results,
artifacts read back through the client, the QUALITY task, and bad requests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from flow_helpers import TRUE, failure_message, flow_run_artifacts, flow_run_logs

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _request(data: Path, storage: Path, **extra):
    from flows import FitRequest

    payload = {"data": {"uri": str(data), "sigma": "sigma"}, "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0],
               "absolute_sigma": True, "storage_uri": str(storage), "plot": False}
    payload.update(extra)
    return FitRequest.model_validate(payload)


def _run(request):
    from flows import fit_flow

    state = fit_flow(request, return_state=True)
    assert state.is_completed(), failure_message(state)
    return state, state.result()


def _assert_close_to_truth(out):
    for name, true in zip("abc", TRUE):
        assert abs(out["params"][name] - true) < 0.05, out["params"]


def _assert_matches_scipy(out, data: Path):
    """Every strategy accumulates exactly: the minimum is SciPy's to solver tolerance."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    with np.load(data) as z:
        x, y, s = z["x"], z["y"], z["sigma"]
    popt, _ = scipy_optimize.curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1, 1, 0], sigma=s,
                                       absolute_sigma=True, xtol=1e-12, ftol=1e-12, gtol=1e-12)
    np.testing.assert_allclose([out["params"][k] for k in "abc"], popt, rtol=1e-5)


# -- the three branches -------------------------------------------------------------------------
def test_standard_branch_stores_results_with_manifest_and_artifacts(decay_npz, tmp_path):
    state, out = _run(_request(decay_npz, tmp_path / "std", preset="standard", plot=True))
    assert out["strategy"] == "standard" and "preset 'standard'" in out["reason"]
    _assert_close_to_truth(out)

    results = Path(out["uris"]["results_dir"])
    assert results.parent == tmp_path / "std" / "runs"  # the run's own directory
    manifest = json.loads((results / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"summary.json", "params.npz", "report.txt", "request.json", "run.json", "fit.png"}
    assert sorted(p.name for p in results.iterdir()) == sorted(set(manifest["files"]) | {"manifest.json"})
    summary = json.loads((results / "summary.json").read_text())
    assert summary["strategy"] == "standard" and summary["success"]
    from nlsq_tasks.io import read_result

    stored = read_result(str(results))  # verifies sizes and checksums against the manifest
    np.testing.assert_allclose(stored.popt, [out["params"][k] for k in "abc"])
    assert stored.strategy_reason == out["reason"] == out["plan"]["reason"]

    # artifacts, read back from the server
    # artifacts, read back from the server: keys name the deployment ("local") and the data set
    arts = {a.key: a for a in flow_run_artifacts(state.state_details.flow_run_id)}
    assert {"nlsq-params-local-decay", "nlsq-report-local-decay", "nlsq-plot-local-decay"} <= set(arts), set(arts)
    table = arts["nlsq-params-local-decay"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [r["parameter"] for r in rows] == ["a", "b", "c"]
    assert all(r["relative %"] for r in rows)
    report = arts["nlsq-report-local-decay"].data
    assert "standard" in report and "chi2" in report and "## Parameters" in report and str(results) in report
    # the plot: written to storage, and embedded (a browser cannot open the worker's file path)
    png = (results / "fit.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import base64
    import re

    for text in (report, arts["nlsq-plot-local-decay"].data):
        (b64,) = re.findall(r"!\[[^]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    # the run's name says which fit it is; its log says how it ended, in one line
    logs = flow_run_logs(state.state_details.flow_run_id, until="fit converged")
    (outcome,) = [m for m in logs if m.startswith("fit converged")]
    assert "reduced chi2" in outcome and "a=2.5" in outcome and str(results) in outcome
    assert not any(m.count("strategy") > 1 for m in logs if m.startswith("plan:")), logs


def test_chunked_branch_chosen_by_memory_limit(decay_npz, tmp_path):
    # 4000 points x 3 params: the data fit in 10 MB, the peak (with the 64 MiB runtime
    # allowance) does not -> chunked, with progress updates per chunk.
    state, out = _run(_request(decay_npz, tmp_path / "chk", memory_limit_gb=0.01))
    assert out["strategy"] == "chunked", out["reason"]
    assert "Jacobian does not fit" in out["reason"]
    _assert_close_to_truth(out)
    _assert_matches_scipy(out, decay_npz)
    arts = [a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.type == "progress"]
    assert arts and float(arts[0].data) == 100.0
    # planned once: the flow's reason, the stored result's and the library planner's are one string
    from nlsq_tasks import plan_fit
    from nlsq_tasks.io import read_result

    with np.load(decay_npz) as z:
        n = z["y"].shape[0]
    library = plan_fit("a*exp(-b*x) + c", n_points=n, workflow="auto", memory_limit_gb=0.01)
    assert out["reason"] == library.reason == read_result(out["uris"]["results_dir"]).strategy_reason
    assert out["plan"] == library.to_dict()
    plan_art = [a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.key == "nlsq-fit-plan"]
    assert plan_art and library.reason.split(";")[0] in plan_art[0].data


def test_streaming_branch_by_preset_checkpoints_and_progress(decay_npz, tmp_path):
    state, out = _run(_request(decay_npz, tmp_path / "str", preset="streaming", overrides={"chunk_size": 1000}))
    assert out["strategy"] == "streaming"
    _assert_close_to_truth(out)
    _assert_matches_scipy(out, decay_npz)
    ckpts = list((tmp_path / "str" / "checkpoints").rglob("*.nlsqckpt"))
    assert ckpts, "streaming writes checkpoints under <storage_uri>/checkpoints"
    progress = [a for a in flow_run_artifacts(state.state_details.flow_run_id) if a.type == "progress"]
    assert len(progress) == 1 and float(progress[0].data) == 100.0
    assert "pass" in (progress[0].description or "")


# -- QUALITY ----------------------------------------------------------------------------------
def test_quality_goal_runs_validation_task_and_writes_validation_json(decay_npz, tmp_path):
    state, out = _run(_request(decay_npz, tmp_path / "q", goal="quality", overrides={"n_starts": 2}))
    assert out["validation"] is not None
    names = {c["name"] for c in out["validation"]["checks"]}
    assert {"convergence", "gradient", "residual_runs", "perturbed_refits"} <= names
    assert out["validation"]["passed"], out["validation"]
    stored = json.loads((Path(out["uris"]["results_dir"]) / "validation.json").read_text())
    assert "validation.json" in json.loads((Path(out["uris"]["results_dir"]) / "manifest.json").read_text())["files"]
    assert stored["passed"] == out["validation"]["passed"]
    report = {a.key: a for a in flow_run_artifacts(state.state_details.flow_run_id)}["nlsq-report-local-decay"].data
    assert "## Validation" in report


# -- bad requests: FAILED, a clear message, and no files ------------------------------------
@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"preset": "no_such_preset"}, "preset", "unknown preset"),
        ({"preset": "nonexistent_dir/p.yaml"}, "preset", "does not exist"),
        ({"preset": "/etc/nlsq/p.yaml"}, "preset", "outside the allowed storage roots"),
        ({"p0": [1.0, 1.0, 5.0], "lower": [0, 0, 0], "upper": [10, 10, 1]}, "p0", "beyond its upper bound"),
        ({"model": "__import__('os').system('echo hi')"}, "model", "not a usable model"),
        ({"model": "a*exp(-b*x"}, "model", "not a usable model"),  # malformed
        ({"p0": [1.0, 2.0]}, "p0", "3 parameters"),
    ],
)
def test_bad_request_fails_before_writing(decay_npz, tmp_path, change, field, words):
    from flows import fit_flow

    storage = tmp_path / "out"
    request = _request(decay_npz, storage)
    # past the request's own validation (as a caller building it field by field can be)
    request = request.model_copy(update={"preset": change["preset"]} if "preset" in change else change)
    state = fit_flow(request, return_state=True)
    assert state.is_failed()
    msg = failure_message(state)
    assert field in msg and words in msg, msg
    assert not storage.exists()
    # one message, logged once, and no traceback
    # A request refused by the flow's parameter validation never starts the run, so nothing is
    # logged to it: read its logs once, without waiting for a final message that never comes.
    refused_before_start = "invalid parameters" in msg
    logs = flow_run_logs(state.state_details.flow_run_id,
                         until=None if refused_before_start else "Finished in state Failed")
    assert sum(words in m for m in logs) <= 2, logs  # the refusal, and Prefect's "Finished in state Failed(...)"
    assert not any("Traceback" in m for m in logs), logs


def test_missing_and_unreadable_data_fail_before_writing(tmp_path):
    from flows import fit_flow

    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"this is not a zip file at all")
    for uri, words in ((tmp_path / "missing.npz", "not found"), (bad, "not a readable npz")):
        storage = tmp_path / f"out-{uri.stem}"
        state = fit_flow(_request(uri, storage), return_state=True)
        assert state.is_failed()
        msg = failure_message(state)
        assert words in msg and uri.name in msg, msg
        assert not storage.exists()


def test_invalid_parameters_rejected_before_the_run(decay_npz, tmp_path):
    """Prefect validates the typed request: a negative memory limit never starts a run."""
    from flows import fit_flow

    good = _request(decay_npz, tmp_path / "x").model_dump()
    good["advanced"]["memory_limit_gb"] = -1
    state = fit_flow(good, return_state=True)
    assert state.is_failed()
    assert "memory_limit_gb" in failure_message(state)
    assert not (tmp_path / "x").exists()


def test_user_preset_file_drives_the_fit(decay_npz, tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("name: mine\nstrategy: streaming\ntolerance: 1.0e-9\nchunk_size: 2000\n")
    _, out = _run(_request(decay_npz, tmp_path / "u", preset=str(preset)))
    assert out["strategy"] == "streaming" and "preset 'mine'" in out["reason"]
    summary = json.loads((Path(out["uris"]["results_dir"]) / "summary.json").read_text())
    assert summary["tolerances"]["ftol"] == pytest.approx(1e-9)


def test_default_storage_holds_a_directory_per_run_and_npy_columns_default(decay_npz, tmp_path, monkeypatch):
    """A 2-D .npy table: x, y, sigma are columns 0, 1, 2 unless the request names others."""
    monkeypatch.chdir(tmp_path)
    with np.load(decay_npz) as z:
        np.save(tmp_path / "table.npy", np.stack([z["x"], z["y"], z["sigma"]], axis=1))
    request = _request(decay_npz, tmp_path, storage_uri=None)
    request = request.model_copy(update={"data": request.data.model_copy(update={"uri": str(tmp_path / "table.npy"),
                                                                              "sigma": None})})
    state, out = _run(request)
    _assert_close_to_truth(out)
    assert out["statistics"]["n_points"] == 4000
    assert Path(out["storage_uri"]) == tmp_path / "nlsq_results"
    assert Path(out["uris"]["results_dir"]).parent == tmp_path / "nlsq_results" / "runs"
    assert (Path(out["uris"]["results_dir"]) / "manifest.json").exists()
    # named after the data set and the model, then the time: table-expr-YYYYmmdd-HHMMSS
    assert re.fullmatch(r"table-expr-\d{8}-\d{6}", Path(out["uris"]["results_dir"]).name), out["uris"]
    # reduced chi2 ~ 1 only if the sigma column (0.05) was used with absolute_sigma
    assert 0.8 < out["statistics"]["redchi"] < 1.2


def test_without_matplotlib_the_flow_runs_and_says_the_plot_was_skipped(decay_npz, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    state, out = _run(_request(decay_npz, tmp_path / "np", preset="standard", plot=True))
    assert any("plot was skipped" in n for n in out["notes"])
    assert "plot" not in out["uris"] and not (Path(out["uris"]["results_dir"]) / "fit.png").exists()
    report = {a.key: a for a in flow_run_artifacts(state.state_details.flow_run_id)}["nlsq-report-local-decay"].data
    assert "plot was skipped" in report
