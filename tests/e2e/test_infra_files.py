"""The infra/ files checked without a server, a cluster or a Docker engine (fast, no e2e mark).

What Prefect itself would say is asked of Prefect's own code: the prefect.yaml model of
`prefect deploy`, the server's base-job-template validator, the JSON-schema validation it
applies to job variables, and the templating a worker applies to build a job. The
Dockerfile cannot be built here (no engine); it is parsed and cross-checked against the
repository. The PBS/SLURM scripts are syntax-checked and run with a stand-in `nlsq-flow`
that records its arguments, which the real CLI parser must then accept.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
PRESETS = sorted(p.stem for p in (REPO / "presets").glob("*.yaml"))
NAMED_PRESETS = {"auto", "standard", "quality", "fast", "large_robust", "streaming", "hpc_distributed"}
TEMPLATES = {"nlsq-docker-gpu": INFRA / "work-pools" / "docker-gpu.json",
             "nlsq-k8s-gpu": INFRA / "work-pools" / "kubernetes-gpu.json"}
IMAGE_WORKDIR = "/opt/nlsq-flows"
SET_WD = "prefect.deployments.steps.set_working_directory"


# -- prefect.yaml --------------------------------------------------------------------------
# Local deployments (a process pool) and GPU ones (Docker, Kubernetes pools) are deployed apart.
DEPLOY_FILES = {"local": INFRA / "prefect.yaml", "gpu": INFRA / "prefect-gpu.yaml"}


@pytest.fixture(scope="module")
def prefect_yamls() -> dict[str, dict]:
    return {kind: yaml.safe_load(path.read_text()) for kind, path in DEPLOY_FILES.items()}


@pytest.fixture(scope="module")
def deployments(prefect_yamls) -> list[dict]:
    return [d for doc in prefect_yamls.values() for d in doc["deployments"]]


def test_prefect_yaml_is_what_prefect_deploy_reads(prefect_yamls, deployments):
    from prefect.cli.deploy._models import PrefectYamlModel

    for doc in prefect_yamls.values():
        model = PrefectYamlModel.model_validate(doc)
        assert len(model.deployments) == len(doc["deployments"])
    assert len(deployments) >= 8
    names = [d["name"] for d in deployments]
    assert len(names) == len(set(names)), "deployment names must be unique"
    assert all("/" not in n for n in names)


def test_local_deployments_need_no_gpu_pool(prefect_yamls):
    """`prefect deploy --all` on the local file only needs the process pool."""
    assert {d["work_pool"]["name"] for d in prefect_yamls["local"]["deployments"]} == {"nlsq-local"}
    assert "nlsq-local" not in {d["work_pool"]["name"] for d in prefect_yamls["gpu"]["deployments"]}


def test_entrypoints_exist_relative_to_the_repo_root(deployments):
    import ast

    for dep in deployments:
        path, func = dep["entrypoint"].rsplit(":", 1)
        source = REPO / path
        assert source.is_file(), f"{dep['name']}: {path} not found from the repository root"
        tree = ast.parse(source.read_text())
        flows = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)
                 and any("flow" in ast.unparse(d) for d in n.decorator_list)]
        assert func in flows, f"{dep['name']}: {func} is not a @flow in {path} (found {flows})"


def test_every_named_preset_has_a_local_deployment_and_presets_are_real(deployments):
    assert NAMED_PRESETS <= set(PRESETS), "presets/ lost one of the named presets"
    local = {d["parameters"]["request"]["preset"] for d in deployments
             if d["work_pool"]["name"] == "nlsq-local" and d["entrypoint"].endswith(":fit_flow")}
    assert local == NAMED_PRESETS
    assert any(d["entrypoint"].endswith(":batch_fit_flow") for d in deployments)
    for dep in deployments:
        assert dep["parameters"]["request"]["preset"] in PRESETS, dep["name"]
        assert dep.get("enforce_parameter_schema") is True, dep["name"]


def test_default_parameters_and_schedule_parameters_fit_the_request_models(deployments):
    # Deployment parameters are partial (the UI form fills in the rest); schedule
    # parameters must be complete, since a scheduled run has nobody to fill them in.
    from flows.request import BatchFitRequest, FitRequest

    for dep in deployments:
        model = BatchFitRequest if dep["entrypoint"].endswith(":batch_fit_flow") else FitRequest
        known = set(model.model_fields)
        assert set(dep["parameters"]["request"]) <= known, dep["name"]
        for sched in dep.get("schedules") or []:
            model.model_validate(sched["parameters"]["request"])


def test_schedules_are_examples_and_start_inactive(deployments):
    from prefect.cli.deploy._models import RawScheduleConfig

    scheduled = [d for d in deployments if d.get("schedules")]
    assert scheduled, "prefect.yaml should carry example schedules"
    kinds = set()
    for dep in scheduled:
        for sched in dep["schedules"]:
            cfg = RawScheduleConfig.model_validate(sched)
            assert cfg.active is False, f"{dep['name']}: example schedules must be created inactive"
            kinds.add("cron" if cfg.cron else "interval" if cfg.interval else "rrule")
    assert {"cron", "interval"} <= kinds


def test_local_deployments_pull_from_the_directory_deploy_ran_in(deployments):
    for dep in deployments:
        (step,) = dep["pull"]
        directory = step[SET_WD]["directory"]
        if dep["work_pool"]["name"] == "nlsq-local":
            # the template names the output of a build step of the same deployment
            ref = re.fullmatch(r"\{\{ *([\w-]+)\.stdout *\}\}", directory)
            assert ref, directory
            ids = [s[k].get("id") for s in dep["build"] for k in s]
            assert ref.group(1) in ids
        else:
            assert directory == IMAGE_WORKDIR, dep["name"]
            assert not dep.get("build"), "images are built with docker build, not at deploy time"


def _resolved_job(template: dict, job_variables: dict) -> dict:
    """The job a worker would build: Prefect's own defaults-then-overrides templating."""
    from prefect.utilities.templating import apply_values
    from prefect.workers.base import BaseJobConfiguration

    values = BaseJobConfiguration._get_base_config_defaults(template["variables"]["properties"])
    values.update(copy.deepcopy(job_variables))
    return apply_values(copy.deepcopy(template["job_configuration"]), values)


def test_gpu_deployments_job_variables_validate_against_their_pool_templates(deployments):
    from prefect.utilities.schema_tools import validate

    gpu = [d for d in deployments if d["work_pool"]["name"] in TEMPLATES]
    assert {d["work_pool"]["name"] for d in gpu} == set(TEMPLATES)
    for dep in gpu:
        template = json.loads(TEMPLATES[dep["work_pool"]["name"]].read_text())
        job_vars = dep["work_pool"]["job_variables"]
        unknown = set(job_vars) - set(template["variables"]["properties"])
        assert not unknown, f"{dep['name']}: job_variables {unknown} are not variables of the pool"
        # what the server runs on deployment creation
        assert validate(job_vars, template["variables"], preprocess=True, ignore_required=True,
                        allow_none_with_default=True) == [], dep["name"]
        assert job_vars["gpu_count"] != 0


# -- work-pool templates -------------------------------------------------------------------
@pytest.mark.parametrize("pool", sorted(TEMPLATES))
def test_templates_pass_the_server_validator_and_their_defaults_validate(pool):
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.schema_tools import validate

    template = json.loads(TEMPLATES[pool].read_text())
    assert set(template) == {"job_configuration", "variables"}
    validate_base_job_template(template)  # every {{ placeholder }} is a declared variable
    props = template["variables"]["properties"]
    defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    assert validate(defaults, template["variables"], preprocess=True, ignore_required=True) == []
    for var in ("image", "gpu_count", "env"):
        assert var in props, f"{pool}: variable {var} missing"
    assert props["gpu_count"]["type"] == "integer"
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" in props["env"]["default"]


def test_kubernetes_template_requests_gpus_in_resource_limits(deployments):
    template = json.loads(TEMPLATES["nlsq-k8s-gpu"].read_text())
    for var in ("namespace", "memory", "cpu", "node_selector", "tolerations"):
        assert var in template["variables"]["properties"]
    job = _resolved_job(template, {})
    manifest = job["job_manifest"]
    # what the Kubernetes worker requires of a job manifest
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["parallelism"] == 1 and pod["completions"] == 1
    (container,) = pod["containers"]
    assert container["name"] == "prefect-job"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # an int, as the API wants
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounted["results"] == f"{IMAGE_WORKDIR}/nlsq_results"
    assert {v["name"] for v in pod["volumes"]} == set(mounted)

    hpc = next(d for d in deployments if d["name"] == "hpc-distributed-k8s-gpu")
    pod = _resolved_job(template, hpc["work_pool"]["job_variables"])["job_manifest"]["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 8 and limits["memory"] == "512Gi"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.count": "8"}


def test_docker_template_passes_gpus_as_a_device_request(deployments):
    template = json.loads(TEMPLATES["nlsq-docker-gpu"].read_text())
    job = _resolved_job(template, {})
    (req,) = job["container_create_kwargs"]["device_requests"]
    assert req == {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}
    assert any(v.endswith(f":{IMAGE_WORKDIR}/nlsq_results") for v in job["volumes"])

    one = next(d for d in deployments if d["name"] == "large-robust-docker-gpu")
    job = _resolved_job(template, one["work_pool"]["job_variables"])
    assert job["container_create_kwargs"]["device_requests"][0]["count"] == 1
    assert job["image"] == one["work_pool"]["job_variables"]["image"]
    assert job["mem_limit"] == "32g"


# -- Dockerfile ----------------------------------------------------------------------------
def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


KNOWN = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "ADD", "USER", "ENTRYPOINT", "CMD",
         "LABEL", "EXPOSE", "VOLUME", "HEALTHCHECK", "SHELL", "STOPSIGNAL", "ONBUILD"}


def test_dockerfile_parses_and_agrees_with_the_repository_and_prefect_yaml():
    ins = _dockerfile_instructions(INFRA / "Dockerfile")
    keywords = [k for k, _ in ins]
    assert set(keywords) <= KNOWN, set(keywords) - KNOWN
    assert keywords[[i for i, k in enumerate(keywords) if k != "ARG"][0]] == "FROM"
    args = dict(ins)
    assert args["WORKDIR"] == IMAGE_WORKDIR  # where the GPU deployments' pull step points
    assert "jax[cuda12]" in " ".join(v for k, v in ins if k == "RUN")
    assert args["USER"] not in ("root", "0")

    copied = set()
    for k, v in ins:
        if k == "COPY":
            *sources, _dest = shlex.split(v)
            for src in sources:
                assert (REPO / src).exists(), f"COPY {src}: not in the repository"
                copied.add(src.rstrip("/").removeprefix("./"))
    # every package pyproject installs must be in the image before `pip install .`
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dirs = setup.get("package-dir", {})
    for pkg in setup["packages"]:
        top = package_dirs.get(pkg, pkg.replace(".", "/")).split("/")[0]
        assert top in copied, f"package {pkg} ({top}/) is not copied into the image"
    assert "README.md" in copied  # pyproject's readme: setuptools reads it at install time

    entry = json.loads(args["ENTRYPOINT"])
    script = REPO / entry[-1].replace(IMAGE_WORKDIR + "/", "")
    assert script.is_file() and os.access(script, os.X_OK), script
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_image_entrypoint_runs_the_worker_command_or_refuses_without_an_api(tmp_path):
    script = INFRA / "docker-entrypoint.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    out = subprocess.run(["bash", str(script), "echo", "flow-run", "executed"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "flow-run executed"
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "PREFECT_API_URL" in out.stderr


# -- PBS / SLURM ---------------------------------------------------------------------------
BATCH_SCRIPTS = {"pbs": INFRA / "pbs" / "hpc_distributed.pbs", "slurm": INFRA / "slurm" / "hpc_distributed.sbatch"}


@pytest.mark.parametrize("kind", sorted(BATCH_SCRIPTS))
def test_batch_scripts_are_valid_bash(kind):
    subprocess.run(["bash", "-n", str(BATCH_SCRIPTS[kind])], check=True)


def test_pbs_directives_ask_for_gpus_and_walltime():
    text = BATCH_SCRIPTS["pbs"].read_text()
    select = re.search(r"^#PBS -l select=(\d+):ncpus=(\d+):ngpus=(\d+)", text, re.M)
    assert select and all(int(g) > 0 for g in select.groups())
    assert re.search(r"^#PBS -l walltime=\d+:\d\d:\d\d$", text, re.M)
    assert re.search(r"^# *module load", text, re.M)


def _fake_venv(root: Path) -> Path:
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export VIRTUAL_ENV="{venv}"\nexport PATH="{venv}/bin:$PATH"\n')
    shim = venv / "bin" / "nlsq-flow"
    # records what the batch script hands to the CLI, as JSON, then exits
    shim.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        "keep = ('PBS_NODEFILE', 'PBS_JOBID', 'SLURM_JOB_NODELIST', 'PREFECT_HOME', 'VIRTUAL_ENV',"
        " 'XLA_PYTHON_CLIENT_PREALLOCATE')\n"
        "json.dump({'argv': sys.argv[1:], 'env': {k: os.environ.get(k) for k in keep}},"
        " open(os.environ['SHIM_OUT'], 'w'))\n"
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return venv


@pytest.mark.parametrize("kind", sorted(BATCH_SCRIPTS))
def test_batch_script_hands_the_hpc_preset_and_the_allocation_to_nlsq_flow(kind, tmp_path):
    from flows.cli import _parser

    venv = _fake_venv(tmp_path)
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("n01\nn01\n")  # one node: the Prefect flow (tests/scale runs the multi-node path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PBS_", "SLURM_", "PREFECT_"))}
    env.update(NLSQ_VENV=str(venv), DATA="/shared/run42/data.npy", MODEL="a*exp(-b*x) + c",
               SHARED_ROOT=str(tmp_path / "shared"), SHIM_OUT=str(tmp_path / "call.json"), TMPDIR=str(tmp_path))
    if kind == "pbs":
        env.update(PBS_NODEFILE=str(nodefile), PBS_JOBID="123.pbs", PBS_O_WORKDIR=str(tmp_path))
    else:
        env.update(SLURM_JOB_NODELIST="n01", SLURM_JOB_NUM_NODES="1", SLURM_JOB_ID="123", SLURM_SUBMIT_DIR=str(tmp_path))
    out = subprocess.run(["bash", str(BATCH_SCRIPTS[kind])], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    call = json.loads((tmp_path / "call.json").read_text())

    args = _parser().parse_args(call["argv"])  # the real CLI accepts what the script passes
    assert args.command == "run" and args.preset == "hpc_distributed"
    assert args.data == env["DATA"] and args.model == env["MODEL"]
    assert Path(args.storage).parent == tmp_path / "shared" / "runs" and Path(args.storage).is_dir()
    assert call["env"]["VIRTUAL_ENV"] == str(venv)
    assert call["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert call["env"]["PREFECT_HOME"].startswith(str(tmp_path))  # no shared server: job-local state
    if kind == "pbs":
        assert call["env"]["PBS_NODEFILE"] == str(nodefile)  # ClusterDetector reads it
    else:
        assert call["env"]["SLURM_JOB_NODELIST"] == "n01"

    # the same data and model map to the same storage, so a resubmitted job resumes
    again = subprocess.run(["bash", str(BATCH_SCRIPTS[kind])], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert json.loads((tmp_path / "call.json").read_text())["argv"] == call["argv"]


def test_batch_script_refuses_to_run_without_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "MODEL")}
    out = subprocess.run(["bash", str(BATCH_SCRIPTS["pbs"])], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DATA" in out.stderr
