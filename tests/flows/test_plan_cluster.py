"""The plan records the HPC allocation (PBS/SLURM) the run saw, with its distributed config,
in ``plan.devices["cluster"]`` and in the reason (the flow's plan task is this same plan)."""

from nlsq_tasks import plan_fit

_SCHEDULER_VARS = ("PBS_NODEFILE", "PBS_JOBID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID", "SLURM_GPUS_ON_NODE")


def _clear(monkeypatch):
    for var in _SCHEDULER_VARS:
        monkeypatch.delenv(var, raising=False)


def _plan():
    return plan_fit(n_points=10_000, n_params=3, memory_limit_gb=1.0)


def test_pbs_allocation_is_recorded(tmp_path, monkeypatch):
    _clear(monkeypatch)
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n01\nn01\nn02\nn02\n")
    monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
    monkeypatch.setenv("PBS_JOBID", "42.pbs-server")
    plan = _plan()
    cluster = plan.devices["cluster"]
    assert cluster["scheduler"] == "pbs"
    assert cluster["node_list"] == ["n01", "n02"]
    assert cluster["job_id"] == "42.pbs-server"
    assert cluster["distributed"]["chunk_size"] > 0
    assert "pbs job 42.pbs-server, 2 node(s)" in plan.reason
    assert plan.to_dict()["devices"]["cluster"]["job_id"] == "42.pbs-server"


def test_slurm_allocation_is_recorded(monkeypatch):
    _clear(monkeypatch)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-03]")
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    cluster = _plan().devices["cluster"]
    assert cluster["node_count"] == 3 and cluster["total_gpus"] == 12


def test_no_scheduler_records_nothing(monkeypatch):
    _clear(monkeypatch)
    plan = _plan()
    assert plan.devices["cluster"] is None and "cluster" not in plan.reason
