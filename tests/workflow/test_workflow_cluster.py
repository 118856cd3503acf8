"""Cluster detection (PBS, SLURM, local GPUs), ClusterInfo, MultiGPUConfig, distributed config."""

import json

import pytest

from nlsq_tasks.workflow import (
    ClusterDetector,
    ClusterInfo,
    MultiGPUConfig,
    create_distributed_config,
    expand_slurm_nodelist,
    get_multi_gpu_config,
)
from nlsq_tasks.workflow import cluster as cluster_mod

SCHEDULER_VARS = ("PBS_NODEFILE", "PBS_JOBID", "SLURM_JOB_NODELIST", "SLURM_NODELIST",
                  "SLURM_GPUS_ON_NODE", "SLURM_JOB_ID", "SLURM_JOBID")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No scheduler variables, no GPUs, no InfiniBand: a plain CPU machine."""
    for var in SCHEDULER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(cluster_mod, "_local_gpu_count", lambda: 0)
    monkeypatch.setattr(cluster_mod, "INFINIBAND_SYSFS", tmp_path / "no_infiniband")
    return monkeypatch


def pbs_nodefile(tmp_path, lines):
    f = tmp_path / "nodefile"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_cpu_machine_outside_scheduler_is_not_a_cluster(clean_env):
    det = ClusterDetector()
    assert not det.is_pbs_environment() and not det.is_slurm_environment()
    assert det.detect() is None and det.detect_pbs() is None and det.detect_slurm() is None
    assert det.detect_local_gpus() is None
    assert get_multi_gpu_config() is None


def test_real_machine_detection_is_consistent():
    # No monkeypatching: on this machine, whatever it is, the answers agree with JAX.
    import jax

    n_gpu = sum(d.platform == "gpu" for d in jax.local_devices())
    info = ClusterDetector().detect_local_gpus()
    assert (info is None) == (n_gpu == 0)
    if info is not None:
        assert info.total_gpus == n_gpu


def test_pbs_nodefile_unique_hosts_in_order(clean_env, tmp_path):
    f = pbs_nodefile(tmp_path, ["node03", "node03", "node01", "", "node03", "node02 ", "node01"])
    clean_env.setenv("PBS_NODEFILE", str(f))
    clean_env.setenv("PBS_JOBID", "12345.pbs_server")
    det = ClusterDetector()
    assert det.is_pbs_environment()
    info = det.detect_pbs()
    assert info.node_list == ["node03", "node01", "node02"]
    assert info.node_count == 3
    assert info.gpus_per_node == 8 and info.total_gpus == 24  # default: JAX sees no GPU here
    assert info.scheduler == "pbs" and info.job_id == "12345.pbs_server"
    assert info.interconnect is None
    assert det.detect() == info


def test_pbs_uses_jax_gpu_count_and_custom_default(clean_env, tmp_path):
    clean_env.setenv("PBS_NODEFILE", str(pbs_nodefile(tmp_path, ["a", "b"])))
    assert ClusterDetector(default_gpus_per_node=4).detect_pbs().total_gpus == 8
    clean_env.setattr(cluster_mod, "_local_gpu_count", lambda: 2)
    info = ClusterDetector(default_gpus_per_node=4).detect_pbs()
    assert (info.gpus_per_node, info.total_gpus) == (2, 4)


def test_pbs_infiniband_detected(clean_env, tmp_path):
    ib = tmp_path / "infiniband"
    (ib / "mlx5_0").mkdir(parents=True)
    clean_env.setattr(cluster_mod, "INFINIBAND_SYSFS", ib)
    clean_env.setenv("PBS_NODEFILE", str(pbs_nodefile(tmp_path, ["n1"])))
    assert ClusterDetector().detect_pbs().interconnect == "infiniband"


def test_pbs_unreadable_nodefile_is_not_a_cluster(clean_env, tmp_path, caplog):
    clean_env.setenv("PBS_NODEFILE", str(tmp_path / "missing"))
    assert ClusterDetector().detect_pbs() is None
    assert "PBS_NODEFILE" in caplog.text


@pytest.mark.parametrize("text, hosts", [
    ("gpu[01-03,07],login1", ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]),
    ("node1", ["node1"]),
    ("a1,a2", ["a1", "a2"]),
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("n[008-010]", ["n008", "n009", "n010"]),
    ("r[1-2]n[08-09]", ["r1n08", "r1n09", "r2n08", "r2n09"]),
    ("x[1,1,2]", ["x1", "x2"]),
])
def test_slurm_bracket_expansion(text, hosts):
    assert expand_slurm_nodelist(text) == hosts


@pytest.mark.parametrize("bad", ["gpu[01-", "gpu[a-b]", "gpu[3-1]", "gpu01]"])
def test_slurm_malformed_lists_raise(bad):
    with pytest.raises(ValueError, match="SLURM node list"):
        expand_slurm_nodelist(bad)


def test_slurm_huge_range_is_refused():
    with pytest.raises(ValueError):
        expand_slurm_nodelist("n[1-99999999]")


def test_slurm_detection(clean_env):
    clean_env.setenv("SLURM_JOB_NODELIST", "gpu[01-03,07],login1")
    clean_env.setenv("SLURM_GPUS_ON_NODE", "4")
    clean_env.setenv("SLURM_JOB_ID", "987")
    det = ClusterDetector()
    assert det.is_slurm_environment() and not det.is_pbs_environment()
    info = det.detect()
    assert info.scheduler == "slurm" and info.job_id == "987"
    assert info.node_list == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    assert (info.node_count, info.gpus_per_node, info.total_gpus) == (5, 4, 20)


def test_slurm_without_gpu_count_uses_default(clean_env):
    clean_env.setenv("SLURM_JOB_NODELIST", "c[1-2]")
    assert ClusterDetector(default_gpus_per_node=2).detect_slurm().total_gpus == 4


def test_pbs_is_tried_before_slurm(clean_env, tmp_path):
    clean_env.setenv("PBS_NODEFILE", str(pbs_nodefile(tmp_path, ["p1"])))
    clean_env.setenv("SLURM_JOB_NODELIST", "s1")
    assert ClusterDetector().detect().scheduler == "pbs"


def test_local_gpus_one_is_not_a_cluster_two_are(clean_env):
    clean_env.setattr(cluster_mod, "_local_gpu_count", lambda: 1)
    det = ClusterDetector()
    assert det.detect_local_gpus().total_gpus == 1
    assert det.detect() is None  # documented choice: one GPU has nothing to distribute
    assert get_multi_gpu_config().n_devices == 1
    clean_env.setattr(cluster_mod, "_local_gpu_count", lambda: 4)
    info = det.detect()
    assert info.scheduler == "local" and info.node_count == 1 and info.total_gpus == 4
    assert get_multi_gpu_config().n_devices == 4


def test_cluster_info_round_trip():
    info = ClusterInfo(
        node_count=6, gpus_per_node=8, total_gpus=48,
        node_list=["node01", "node02", "node03", "node04", "node05", "node06"],
        scheduler="pbs", job_id="12345.pbs_server", interconnect="infiniband",
    )
    d = info.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert ClusterInfo.from_dict(d) == info
    assert ClusterInfo.from_dict(json.loads(json.dumps(d))) == info
    assert ClusterInfo.from_dict({"node_count": 1, "gpus_per_node": 0, "total_gpus": 0}).scheduler == "unknown"


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(node_count=0), ValueError, "node_count"),
    (dict(node_count="2"), TypeError, "node_count"),
    (dict(gpus_per_node=-1), ValueError, "gpus_per_node"),
    (dict(total_gpus=True), TypeError, "total_gpus"),
    (dict(node_list="node01"), TypeError, "node_list"),
    (dict(node_list=["a", "b", "c"]), ValueError, "node_list"),
    (dict(scheduler="lsf"), ValueError, "scheduler"),
    (dict(job_id=12), TypeError, "job_id"),
])
def test_cluster_info_validates(kwargs, exc, name):
    args = dict(node_count=2, gpus_per_node=1, total_gpus=2) | kwargs
    with pytest.raises(exc, match=name):
        ClusterInfo(**args)


def test_cluster_info_from_dict_errors():
    with pytest.raises(TypeError):
        ClusterInfo.from_dict([("node_count", 1)])
    with pytest.raises(ValueError, match="nodes"):
        ClusterInfo.from_dict({"node_count": 1, "gpus_per_node": 1, "total_gpus": 1, "nodes": []})
    with pytest.raises(ValueError, match="total_gpus"):
        ClusterInfo.from_dict({"node_count": 1, "gpus_per_node": 1})


def test_multi_gpu_config():
    cfg = MultiGPUConfig(n_devices=4, per_device_batch_size=5000)
    assert cfg.total_batch_size == 20000
    d = cfg.to_dict()
    assert d == {"n_devices": 4, "shard_axis": 0, "use_pmap": True, "use_pjit": False,
                 "per_device_batch_size": 5000, "total_batch_size": 20000}
    with pytest.raises(ValueError, match="n_devices"):
        MultiGPUConfig(n_devices=0)
    with pytest.raises(TypeError, match="use_pmap"):
        MultiGPUConfig(n_devices=1, use_pmap="yes")
    with pytest.raises(ValueError, match="per_device_batch_size"):
        MultiGPUConfig(n_devices=1, per_device_batch_size=0)


def test_distributed_config():
    info = ClusterInfo(node_count=6, gpus_per_node=8, total_gpus=48, scheduler="pbs", job_id="1")
    cfg = create_distributed_config(info)
    assert cfg["node_count"] == 6 and cfg["gpus_per_node"] == 8 and cfg["total_gpus"] == 48
    assert 1_000 <= cfg["chunk_size"] <= 1_000_000
    assert cfg["enable_checkpoints"] is True
    assert cfg["checkpoint_frequency"] == cfg["checkpoint_every_chunks"] >= 1
    assert 1 <= cfg["n_starts"] <= 48
    assert cfg["tolerances"] == {"gtol": 1e-6, "ftol": 1e-6, "xtol": 1e-6}
    json.dumps(cfg)
    with pytest.raises(TypeError, match="cluster_info"):
        create_distributed_config(info.to_dict())


def test_multi_gpu_config_from_cluster_info():
    info = ClusterInfo(node_count=2, gpus_per_node=4, total_gpus=8)
    assert get_multi_gpu_config(info).n_devices == 4
    assert get_multi_gpu_config(ClusterInfo(node_count=1, gpus_per_node=0, total_gpus=0)) is None
    with pytest.raises(TypeError, match="cluster_info"):
        get_multi_gpu_config({"node_count": 1})


def test_detector_validates_default():
    with pytest.raises(ValueError, match="default_gpus_per_node"):
        ClusterDetector(default_gpus_per_node=0)
    assert ClusterDetector.DEFAULT_GPUS_PER_NODE == 8 == ClusterDetector().default_gpus_per_node
