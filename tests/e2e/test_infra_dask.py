"""infra/dask checked without a queue or a Kubernetes cluster: the dask-jobqueue clusters
are built (a scheduler on 127.0.0.1, no job submitted) and their job scripts read; the
DaskCluster resource is parsed and cross-checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASK = REPO / "infra" / "dask"
pytest.importorskip("dask_jobqueue")


def _script():
    spec = importlib.util.spec_from_file_location("jobqueue_cluster", DASK / "jobqueue_cluster.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("system, directive, walltime", [("pbs", "#PBS", "#PBS -l walltime=01:30:00"),
                                                          ("slurm", "#SBATCH", "#SBATCH -t 01:30:00")])
def test_jobqueue_job_script(system, directive, walltime, capsys):
    mod = _script()
    rc = mod.main([system, "--print-job-script", "--scheduler-host", "127.0.0.1", "--cores", "8", "--memory", "32GB",
                   "--walltime", "01:30:00", "--queue", "q1", "--job-extra=--exclusive" if system == "slurm" else "--job-extra=-j oe"])
    out = capsys.readouterr().out
    assert rc == 0 and directive + " " in out and walltime in out
    worker = next(line for line in out.splitlines() if "dask_worker" in line)
    # one thread per worker process, 8 processes per job, the scheduler it was built with
    assert "--nthreads 1" in worker and "--nworkers 8" in worker and "tcp://127.0.0.1:" in worker
    assert "q1" in out and ("--exclusive" in out if system == "slurm" else "-j oe" in out)


def test_kubernetes_dask_cluster_resource():
    doc = yaml.safe_load((DASK / "kubernetes" / "dask-cluster.yaml").read_text())
    assert doc["apiVersion"] == "kubernetes.dask.org/v1" and doc["kind"] == "DaskCluster"
    name = doc["metadata"]["name"]
    worker = doc["spec"]["worker"]["spec"]["containers"][0]
    scheduler = doc["spec"]["scheduler"]["spec"]["containers"][0]
    assert worker["command"] == ["dask", "worker"] and "--nthreads" in worker["args"]
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "1"
    assert scheduler["command"] == ["dask", "scheduler"]
    service = doc["spec"]["scheduler"]["service"]
    assert service["selector"]["dask.org/cluster-name"] == name
    assert {p["port"] for p in service["ports"]} == {8786, 8787}
    # the image infra/Dockerfile builds (the work pools' image), which installs the dask extra
    dockerfile = (REPO / "infra" / "Dockerfile").read_text()
    assert worker["image"] == scheduler["image"] and f"-t {worker['image']} " in dockerfile
    assert '".[parquet,plot,dask]"' in dockerfile
