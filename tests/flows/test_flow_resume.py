"""A streaming fit_flow killed mid-pass (SIGKILL: no cleanup at all) resumes from its
checkpoints when the same request runs again."""

from __future__ import annotations

import json
from pathlib import Path
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from flow_helpers import read_flow_run, failure_message, write_npz

pytestmark = pytest.mark.usefixtures("prefect_harness")

_CHILD = r"""
import json, sys
from flows import FitRequest, fit_flow
fit_flow(FitRequest.model_validate(json.loads(sys.argv[1])))
"""


def test_killed_streaming_run_resumes_from_checkpoints(tmp_path, prefect_api_url):
    from flows import FitRequest, fit_flow

    data = write_npz(tmp_path / "big.npz", 200_000)
    storage = tmp_path / "run"
    payload = {
        "data": {"uri": str(data), "sigma": "sigma"}, "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0],
        "absolute_sigma": True, "preset": "streaming", "plot": False, "storage_uri": str(storage),
        "overrides": {"chunk_size": 1000, "checkpoint_every": 10},
    }
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PREFECT_LOGGING_LEVEL": "WARNING"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(payload)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = storage / "checkpoints"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # bounded wait for the first checkpoint
            if child.poll() is not None:
                pytest.fail(f"the first run ended before it could be killed: {child.stderr.read().decode()[-2000:]}")
            if list(ckpts.rglob("*.nlsqckpt")):
                break
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint appeared within 300 s")
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert not list(storage.rglob("manifest.json")), "the killed run must not have finished"
    killed = json.loads(next(storage.glob("runs/*/run.json")).read_text())

    state = fit_flow(FitRequest.model_validate(payload), return_state=True)
    assert state.is_completed(), failure_message(state)
    out = state.result()
    summary = json.loads((Path(out["uris"]["results_dir"]) / "summary.json").read_text())
    assert summary["checkpoints"]["resumed"] is True, summary["checkpoints"]
    assert summary["success"]
    # the second run wrote beside the killed one, took its dead checkpoint lock over, and
    # marked the killed run CRASHED (it would otherwise stay RUNNING for ever)
    assert Path(out["uris"]["results_dir"]).name != killed["run_name"]
    assert read_flow_run(killed["flow_run_id"]).state.type.value == "CRASHED"
    assert not list((storage / "checkpoints" / "locks").iterdir())  # released

    scipy_optimize = pytest.importorskip("scipy.optimize")
    with np.load(data) as z:
        popt, _ = scipy_optimize.curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, z["x"], z["y"], p0=[1, 1, 0],
                                           sigma=z["sigma"], absolute_sigma=True, xtol=1e-12, ftol=1e-12)
    np.testing.assert_allclose(summary["popt"], popt, rtol=1e-5)
