"""`kill -9` of the CLI in the middle of a streaming fit (issue 14, item 4): its temporary
Prefect server goes away, its run is marked CRASHED, and running the same command again --
without --storage -- resumes from the checkpoints (they are keyed by the problem, not by a
run name)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flow_helpers import write_npz

WAIT_S = 300


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc (Linux)")
def test_killed_cli_leaves_no_server_a_crashed_run_and_resumes_on_rerun(tmp_path):
    data = write_npz(tmp_path / "big.npz", 200_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    argv = [sys.executable, "-m", "flows.cli", "run", "--data", str(data), "--model", "a*exp(-b*x) + c",
            "--p0", "1", "1", "0", "--sigma", "sigma", "--absolute-sigma", "--preset", "streaming",
            "--chunk-size", "1000", "--no-plot", "--json"]
    cli = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "nlsq_results" / "checkpoints"
    server = []
    try:
        for _ in range(int(WAIT_S / 0.1)):  # bounded: until the first checkpoint exists
            if cli.poll() is not None:
                pytest.fail("the CLI ended before it could be killed: " + cli.stderr.read().decode()[-3000:])
            server = server or [p for p in _children(cli.pid) if "uvicorn" in Path(f"/proc/{p}/cmdline").read_text()]
            if list(checkpoints.rglob("*.nlsqckpt")):
                break
            time.sleep(0.1)
        else:
            pytest.fail("no checkpoint within the wait")
        assert server, "the CLI's temporary server was not found among its children"
        cli.send_signal(signal.SIGKILL)
    finally:
        cli.wait(timeout=60)
    for _ in range(600):  # bounded: the watchdog stops the server once the CLI is gone
        if not any(_alive(p) for p in server):
            break
        time.sleep(0.1)
    assert not any(_alive(p) for p in server), "the killed CLI's temporary server is still running"

    (killed_dir,) = list((tmp_path / "nlsq_results" / "runs").iterdir())
    killed = json.loads((killed_dir / "run.json").read_text())
    db = sqlite3.connect(tmp_path / "home" / "prefect.db")
    try:
        (state,) = db.execute("select state_type from flow_run where name = ?", (killed["run_name"],)).fetchone()
    finally:
        db.close()
    assert state == "CRASHED"

    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout)
    summary = json.loads((Path(out["uris"]["results_dir"]) / "summary.json").read_text())
    assert summary["checkpoints"]["resumed"] is True and summary["success"]
    assert "Traceback" not in again.stderr
