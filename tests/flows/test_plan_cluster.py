"""plan_fit records the HPC allocation (PBS/SLURM) the run saw, with its distributed config."""

from flows.tasks import _record_cluster

_SCHEDULER_VARS = ("PBS_NODEFILE", "PBS_JOBID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID", "SLURM_GPUS_ON_NODE")


def _clear(monkeypatch):
    for var in _SCHEDULER_VARS:
        monkeypatch.delenv(var, raising=False)


def test_pbs_allocation_is_recorded(tmp_path, monkeypatch):
    _clear(monkeypatch)
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n01\nn01\nn02\nn02\n")
    monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
    monkeypatch.setenv("PBS_JOBID", "42.pbs-server")
    plan = {"reason": "everything fits"}
    _record_cluster(plan)
    assert plan["cluster"]["scheduler"] == "pbs"
    assert plan["cluster"]["node_list"] == ["n01", "n02"]
    assert plan["cluster"]["job_id"] == "42.pbs-server"
    assert plan["distributed"]["chunk_size"] > 0
    assert "pbs job 42.pbs-server, 2 node(s)" in plan["reason"]


def test_slurm_allocation_is_recorded(monkeypatch):
    _clear(monkeypatch)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-03]")
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    plan = {"reason": "r"}
    _record_cluster(plan)
    assert plan["cluster"]["node_count"] == 3 and plan["cluster"]["total_gpus"] == 12


def test_no_scheduler_records_nothing(monkeypatch):
    _clear(monkeypatch)
    plan = {"reason": "r"}
    _record_cluster(plan)
    assert "cluster" not in plan and plan["reason"] == "r"
