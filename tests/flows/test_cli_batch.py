"""``nlsq-flow batch``, run as a user runs it (a subprocess against the test Prefect API)."""

from __future__ import annotations

import io

import numpy as np

from flow_helpers import write_npz
from test_cli import _cli


def test_batch_over_a_glob_reports_the_table_and_the_failure(tmp_path, prefect_api_url):
    from nlsq_tasks.io import read_table

    data = tmp_path / "runs"
    data.mkdir()
    for i in range(3):
        write_npz(data / f"r{i}.npz", 200, seed=i)
    np.savez(data / "r9.npz", x=np.arange(5.0), signal=np.ones(5))  # no y member
    out = _cli("batch", "--data", data / "*.npz", "--model", "a*exp(-b*x) + c", "--p0", 1, 1, 0,
               "--storage", tmp_path / "out", "--batch-size", 2, env={"PREFECT_API_URL": prefect_api_url})
    assert out.returncode == 3, out.stderr[-3000:]  # some data sets failed
    assert "3 of 4 data sets fitted, 1 failed, in 2 batches" in out.stdout
    assert "failed: " in out.stdout and "r9.npz" in out.stdout and "'y'" in out.stdout
    table = read_table(str(next((tmp_path / "out").rglob("fits.parquet"))))  # in the run's own directory
    assert list(table["success"]) == [True, True, True, False]
    assert "\r[" not in out.stderr  # no progress bar when stderr is not a terminal


def test_batch_over_a_stack_as_json(tmp_path, prefect_api_url):
    import json

    x = np.linspace(0, 2, 12)
    y = np.stack([3.0 * np.exp(-r * x) for r in (0.5, 1.0, 1.5)])
    np.savez(tmp_path / "stack.npz", x=x, y=y)
    out = _cli("batch", "--stack", tmp_path / "stack.npz", "--model", "a*exp(-b*x)", "--p0", 1, 1,
               "--storage", tmp_path / "out", "--json", env={"PREFECT_API_URL": prefect_api_url})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert (result["n_datasets"], result["n_ok"], result["n_batches"]) == (3, 3, 1)


def test_bad_batch_request_is_refused(capsys):
    from flows.cli import main

    assert main(["batch", "--data", "x/*.npz", "--model", "a*x", "--batch-size", "-1"]) == 2  # 0: automatic
    assert "batch_size" in capsys.readouterr().err


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal():
    from flows.batch_progress import BatchProgress, bar_line

    assert bar_line(45, 100, 3, width=10) == "[####......]  45/100 data sets (45%), 3 failed"
    tty = _Tty()
    bar = BatchProgress(10, stream=tty, artifact=False)
    bar.advance(4)
    bar.advance(6, failed=1)
    text = tty.getvalue()
    assert text.startswith("\r[") and text.endswith("10/10 data sets (100%), 1 failed\n")
