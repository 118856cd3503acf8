"""One fit over 2 local processes joined by jax.distributed (CPU, gloo, 127.0.0.1),
reading one .npy file: explicitly launched, and through the PBS and SLURM scripts in a
fake allocation (environment variables, a node file and stand-ins for pbsdsh/srun that
start the processes here). A killed process fails the job with a clear message and a
re-launch resumes from the checkpoint to the same answer."""

from __future__ import annotations

import glob
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nlsq_tasks

ROOT = Path(__file__).resolve().parents[2]
FAKE_BIN = Path(__file__).with_name("fake_hpc")
MODEL = "a*exp(-b*x) + c"
PRESET = "hpc_distributed"
N = 24_001


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 5.0, N)
    y = 2.5 * np.exp(-1.3 * x) + 0.4 + 0.05 * rng.standard_normal(N)
    path = tmp_path_factory.mktemp("mp") / "data.npy"
    np.save(path, np.stack([x, y], axis=1))
    return path


@pytest.fixture(scope="module")
def reference(data_file) -> np.ndarray:
    """The single-process fit of the same data with the same plan."""
    xy = np.load(data_file)
    res = nlsq_tasks.fit(MODEL, xy[:, 0], xy[:, 1], workflow=PRESET, strategy="chunked")
    assert res.execution["n_devices"] == 1
    return res.popt


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PBS_", "SLURM_", "NLSQ_COORD", "XLA_FLAGS"))}
    env.update(JAX_PLATFORMS="cpu", NLSQ_HEARTBEAT_TIMEOUT_S="10", PYTHONPATH=str(ROOT), **extra)
    return env


def _free_port(lo: int = 20_000, hi: int = 60_000) -> int:
    for _ in range(200):
        port = random.randint(lo, hi)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def _outputs(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _check_two(outs: list[dict], reference: np.ndarray, storage: Path) -> None:
    assert sorted(o["process_index"] for o in outs) == [0, 1]
    for o in outs:
        assert o["process_count"] == 2 and o["success"]
        ex = o["execution"]
        assert ex["sharded"] and ex["n_processes"] == 2 and ex["n_devices"] == 2
        assert 0 < ex["rows_read_here"] <= ex["rows_per_device"] < N  # its own rows only
        np.testing.assert_allclose(o["popt"], reference, rtol=1e-12, atol=0)
    assert outs[0]["popt"] == outs[1]["popt"]
    writers = [o for o in outs if o["wrote"]]
    assert [o["process_index"] for o in writers] == [0]  # only process 0 writes
    summary = json.loads((storage / "result" / "summary.json").read_text())
    assert summary["execution"]["n_processes"] == 2
    assert "2 process(es)" in (storage / "result" / "report.txt").read_text()


def test_two_explicit_processes_match_the_single_process_fit(data_file, reference, tmp_path):
    storage = tmp_path / "store"
    coord = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.distributed_run", "--data", str(data_file), "--model", MODEL, "--preset", PRESET,
             "--storage", str(storage), "--coordinator", coord, "--num-processes", "2", "--process-id", str(i)],
            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for i in range(2)
    ]
    outs = []
    for p in procs:
        so, se = p.communicate(timeout=600)
        assert p.returncode == 0, se[-3000:]
        outs += _outputs(so)
    _check_two(outs, reference, storage)


def _fake_allocation(tmp_path: Path, kind: str, data_file: Path, storage: Path) -> tuple[list[str], dict]:
    venv_dir = Path(sys.executable).parent.parent
    env = _env(DATA=str(data_file), MODEL=MODEL, PRESET=PRESET, STORAGE=str(storage), NLSQ_VENV=str(venv_dir),
               TMPDIR=str(tmp_path))
    env["PATH"] = f"{FAKE_BIN}:{env['PATH']}"
    if kind == "pbs":
        nodefile = tmp_path / "nodefile"
        nodefile.write_text("localhost\nlocalhost\n127.0.0.1\n127.0.0.1\n")  # 2 nodes, 2 slots each
        env.update(PBS_NODEFILE=str(nodefile), PBS_JOBID="4242.pbs-server", PBS_O_WORKDIR=str(ROOT),
                   NLSQ_COORDINATOR_PORT=str(_free_port()))
        return ["bash", str(ROOT / "infra" / "pbs" / "hpc_distributed.pbs")], env
    port = _free_port(61_440, 65_535)  # JAX's SLURM port: job id % 4096 + 61440
    env.update(SLURM_JOB_ID=str(port - 61_440 + 4096 * 7), SLURM_JOB_NODELIST="localhost,127.0.0.1",
               SLURM_JOB_NUM_NODES="2", SLURM_SUBMIT_DIR=str(ROOT))
    return ["bash", str(ROOT / "infra" / "slurm" / "hpc_distributed.sbatch")], env


def test_pbs_script_runs_one_process_per_node(data_file, reference, tmp_path):
    storage = tmp_path / "store"
    cmd, env = _fake_allocation(tmp_path, "pbs", data_file, storage)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_two(_outputs(out.stdout), reference, storage)


def _task_pid(storage: Path, rank: str) -> int | None:
    for d in glob.glob("/proc/[0-9]*"):
        try:
            cmd = Path(d, "cmdline").read_bytes().split(b"\0")
            if b"flows.distributed_run" not in cmd or str(storage).encode() not in cmd:
                continue
            env = Path(d, "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURM_PROCID={rank}".encode() in env:
            return int(Path(d).name)
    return None


def test_slurm_job_killed_then_resubmitted_resumes(data_file, reference, tmp_path):
    storage = tmp_path / "store"
    cmd, env = _fake_allocation(tmp_path, "slurm", data_file, storage)
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 600
    victim = None
    while victim is None:  # find task 1 first, so that the kill follows the first checkpoint at once
        assert job.poll() is None, job.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "task 1 never started"
        victim = _task_pid(storage, "1")
        time.sleep(0.05)
    while not glob.glob(str(storage / "checkpoints" / "*" / "ckpt-0000000001-*")):
        assert job.poll() is None, job.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.002)
    os.kill(victim, 9)
    so, se = job.communicate(timeout=300)
    assert job.returncode != 0
    assert "the distributed fit FAILED" in se and "resumes from its latest checkpoint" in se
    assert not (storage / "result" / "manifest.json").exists()  # no result from a failed job

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    outs = _outputs(again.stdout)
    assert all(o["checkpoints"]["resumed"] for o in outs)
    _check_two(outs, reference, storage)
