"""Runs own their storage and failed fits fail (issue 14, items 3 and 4): a directory per run,
never an overwrite, a lock per problem's checkpoints, every file in the manifest, a failed
fit ends FAILED (or COMPLETED with a warning when asked), and the HPC scripts pass the
CLI's exit code on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flow_helpers import failure_message

REPO = Path(__file__).resolve().parents[2]


# -- run directories and locks (no Prefect) ---------------------------------------------------------
def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_a_taken_run_name_gets_a_sibling_directory_never_an_overwrite(tmp_path):
    from flows.ownership import claim_run_dir, owner_record

    first = claim_run_dir(str(tmp_path), "nightly fit", None, owner_record("nightly fit", None))
    (Path(first) / "summary.json").write_text("first")
    second = claim_run_dir(str(tmp_path), "nightly fit", None, owner_record("nightly fit", None))
    assert Path(first).name == "nightly-fit" and Path(second).name == "nightly-fit-2"
    assert (Path(first) / "summary.json").read_text() == "first"
    assert json.loads((Path(second) / "run.json").read_text())["pid"] == os.getpid()


def test_a_live_holder_blocks_a_second_run_of_the_same_problem(tmp_path):
    from flows.ownership import ProblemLock, StorageInUseError, owner_record

    with ProblemLock(str(tmp_path / "checkpoints"), "k1", None, owner_record("first", None)):
        with pytest.raises(StorageInUseError, match=r"being written by run 'first' \(pid \d+") as err:
            ProblemLock(str(tmp_path / "checkpoints"), "k1", None, owner_record("second", None)).acquire()
        assert err.value.field == "storage_uri" and "nothing was written" in str(err.value)
        # another problem at the same location is not blocked
        with ProblemLock(str(tmp_path / "checkpoints"), "k2", None, owner_record("other", None)):
            pass
    assert not list((tmp_path / "checkpoints" / "locks").iterdir())  # both released


def test_a_dead_holders_lock_is_taken_over_and_its_run_reported(tmp_path):
    from flows.ownership import ProblemLock, owner_record

    locks = tmp_path / "checkpoints" / "locks"
    locks.mkdir(parents=True)
    dead = {**owner_record("killed", "1234"), "pid": _dead_pid()}
    (locks / "k1.json").write_text(json.dumps(dead))
    seen = []
    with ProblemLock(str(tmp_path / "checkpoints"), "k1", None, owner_record("again", None), on_stale=seen.append):
        assert json.loads((locks / "k1.json").read_text())["run_name"] == "again"
    assert [h["run_name"] for h in seen] == ["killed"]


def test_rewriting_a_result_removes_files_the_new_one_does_not_have(tmp_path):
    """The stale 'passed: true' of the issue: an old validation.json beside a new fit."""
    import numpy as np

    from nlsq_tasks import fit
    from nlsq_tasks.io import ResultStore, read_result_files

    x = np.linspace(0, 1, 30)
    res = fit("a*x+b", x, 2 * x + 1)
    store = ResultStore(str(tmp_path))
    store.write(res)
    store.add_files({"validation.json": b'{"passed": true}', "fit.png": b"\x89PNG"})
    assert {"validation.json", "fit.png"} <= set(read_result_files(str(tmp_path))["manifest"]["files"])
    store.write(res)  # a re-run without validation or plot
    assert not (tmp_path / "validation.json").exists() and not (tmp_path / "fit.png").exists()
    assert set(read_result_files(str(tmp_path))["manifest"]["files"]) == {"summary.json", "params.npz", "report.txt"}


# -- flows ---------------------------------------------------------------------------------------------------
def _request(data, storage, **extra):
    from flows import FitRequest

    payload = {"data": {"uri": str(data), "sigma": "sigma"}, "model": "a*exp(-b*x) + c", "p0": [1.0, 1.0, 0.0],
               "absolute_sigma": True, "storage_uri": str(storage), "plot": False, "preset": "standard"}
    payload.update(extra)
    return FitRequest.model_validate(payload)


def test_two_runs_on_one_storage_write_beside_each_other(prefect_harness, decay_npz, tmp_path):
    from flows import fit_flow

    first = fit_flow(_request(decay_npz, tmp_path), return_state=True)
    assert first.is_completed(), failure_message(first)
    first_dir = Path(first.result()["uris"]["results_dir"])
    before = {p.name: p.read_bytes() for p in first_dir.iterdir()}
    # the stored plan says how the data were scanned for NaN/inf (item 7)
    assert "in memory before the fit" in json.loads((first_dir / "request.json").read_text())["plan"]["data_scan"]
    second = fit_flow(_request(decay_npz, tmp_path, p0=[2.0, 0.5, 0.0]), return_state=True)
    assert second.is_completed(), failure_message(second)
    second_dir = Path(second.result()["uris"]["results_dir"])
    assert second_dir != first_dir and second_dir.parent == first_dir.parent == tmp_path / "runs"
    assert {p.name: p.read_bytes() for p in first_dir.iterdir()} == before  # untouched


def test_a_failed_fit_fails_the_run_and_keeps_its_result(prefect_harness, decay_npz, tmp_path):
    from flows import fit_flow

    req = _request(decay_npz, tmp_path, p0=[50.0, 9.0, -20.0], overrides={"max_nfev": 2})
    state = fit_flow(req, return_state=True)
    assert state.is_failed()
    msg = failure_message(state)
    assert "FitFailedError" in msg and "did not succeed" in msg and "on_failed_fit='warn'" in msg, msg
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["success"] is False  # the result is stored, for diagnosis

    from flows.request import FailedFit

    warned = fit_flow(req.model_copy(update={"advanced": req.advanced.model_copy(update={"on_failed_fit": FailedFit.WARN})}),
                      return_state=True)
    assert warned.is_completed() and warned.name == "Completed with warnings", warned
    assert warned.result()["fit_failed"] is True and "did not succeed" in warned.message


@pytest.mark.parametrize("script", ["infra/pbs/hpc_distributed.pbs", "infra/slurm/hpc_distributed.sbatch"])
@pytest.mark.parametrize("code", [0, 1, 3])
def test_hpc_scripts_end_with_the_cli_exit_code(tmp_path, script, code):
    """The job scheduler sees the fit's outcome: the script execs the CLI, so the job's exit
    status is the CLI's (a failed fit is 1, a warned one 3)."""
    fake_bin = tmp_path / "venv" / "bin"
    fake_bin.mkdir(parents=True)
    (fake_bin / "nlsq-flow").write_text(f"#!/bin/sh\necho ran nlsq-flow \"$@\"\nexit {code}\n")
    (fake_bin / "nlsq-flow").chmod(0o755)
    (fake_bin / "activate").write_text(f'export PATH="{fake_bin}:$PATH"\n')
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "USER": "tester", "DATA": str(tmp_path / "d.npy"),
           "MODEL": "exponential_decay", "NLSQ_VENV": str(tmp_path / "venv"), "SHARED_ROOT": str(tmp_path / "shared"),
           "TMPDIR": str(tmp_path), "PBS_O_WORKDIR": str(tmp_path), "SLURM_SUBMIT_DIR": str(tmp_path)}
    out = subprocess.run(["bash", str(REPO / script)], env=env, capture_output=True, text=True, timeout=60,
                         cwd=str(tmp_path))
    assert "ran nlsq-flow run" in out.stdout, out.stdout + out.stderr
    assert out.returncode == code, out.stdout + out.stderr


@pytest.mark.parametrize("strategy, words", [("streaming", "as the first pass reads it"), ("standard", "in memory before the fit")])
def test_the_plan_says_how_the_data_are_scanned_for_nan(strategy, words):
    from flows.tasks import data_scan_note

    assert words in data_scan_note(strategy)
