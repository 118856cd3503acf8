"""A Dask cluster on PBS or SLURM with dask-jobqueue, for nlsq-flows fits and batches.

Run it on a login node (or in a small job) that the compute nodes can reach. It starts a
Dask scheduler here, submits ``--jobs`` batch jobs, each running ``--processes`` Dask
worker processes (default one per core, so one thread each: the worker count is the
parallelism a fit records),
prints the scheduler address, and keeps the cluster up until Ctrl-C or ``--hours``::

    python infra/dask/jobqueue_cluster.py pbs --jobs 4 --cores 32 --memory 240GB \\
        --walltime 04:00:00 --queue workq --account my_project
    #   scheduler: tcp://10.1.2.3:8786     <- give this to the fits

then, from anywhere that reaches the scheduler::

    nlsq-flow run DATA_URI --model M --executor tcp://10.1.2.3:8786          # one out-of-core fit
    python -c "import nlsq_tasks as N, nlsq_tasks.io as io; print(N.fit_source('gaussian',
        io.open_source('s3://bucket/big.npy'), executor='tcp://10.1.2.3:8786'))"

Every worker must reach the data (an object store, or a shared file system such as
Lustre/GPFS) and have nlsq-flows installed (``pip install 'nlsq-flows[dask]'`` in the same
environment: by default the jobs run this Python). ``--print-job-script`` prints the
batch script that would be submitted and exits without submitting anything.
"""

from __future__ import annotations

import argparse
import sys
import time

SYSTEMS = {"pbs": "PBSCluster", "slurm": "SLURMCluster"}


def make_cluster(system: str, *, cores: int, processes: int, memory: str, walltime: str, queue: str | None = None,
                 account: str | None = None, interface: str | None = None, local_directory: str | None = None,
                 job_extra: list[str] | None = None, scheduler_host: str | None = None):
    """The dask-jobqueue cluster object (starts the scheduler; submits no job until scaled)."""
    import dask_jobqueue

    cls = getattr(dask_jobqueue, SYSTEMS[system])
    kw = dict(cores=cores, processes=processes, memory=memory, walltime=walltime, queue=queue, account=account,
              interface=interface, local_directory=local_directory, job_extra_directives=list(job_extra or []),
              job_name="nlsq-dask")
    if scheduler_host:
        kw["scheduler_options"] = {"host": scheduler_host}
    return cls(**{k: v for k, v in kw.items() if v is not None})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("system", choices=sorted(SYSTEMS))
    ap.add_argument("--jobs", type=int, default=2, help="batch jobs (nodes) to submit")
    ap.add_argument("--cores", type=int, default=32, help="cores per job")
    ap.add_argument("--processes", type=int, default=None,
                    help="Dask worker processes per job (default: --cores, i.e. one thread per worker: the pass "
                         "executor's parallelism is its number of worker processes, and JAX compiles holding the GIL)")
    ap.add_argument("--memory", default="120GB", help="memory per job (split among its workers)")
    ap.add_argument("--walltime", default="02:00:00")
    ap.add_argument("--queue")
    ap.add_argument("--account")
    ap.add_argument("--interface", help="network interface of the nodes, e.g. ib0")
    ap.add_argument("--local-directory", help="node-local scratch for spilled data, e.g. $TMPDIR")
    ap.add_argument("--job-extra", action="append", default=[], help="an extra #PBS/#SBATCH directive (repeatable)")
    ap.add_argument("--scheduler-host", help="address the scheduler binds (default: this host's)")
    ap.add_argument("--hours", type=float, default=2.0, help="tear the cluster down after this long")
    ap.add_argument("--print-job-script", action="store_true", help="print the job script and exit")
    a = ap.parse_args(argv)
    a.processes = a.processes or a.cores
    cluster = make_cluster(a.system, cores=a.cores, processes=a.processes, memory=a.memory, walltime=a.walltime,
                           queue=a.queue, account=a.account, interface=a.interface,
                           local_directory=a.local_directory, job_extra=a.job_extra, scheduler_host=a.scheduler_host)
    try:
        if a.print_job_script:
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=a.jobs)
        print(f"scheduler: {cluster.scheduler_address}", flush=True)
        print(f"{a.jobs} job(s) x {a.processes} worker processes submitted; Ctrl-C to stop", flush=True)
        deadline = time.monotonic() + a.hours * 3600
        while time.monotonic() < deadline:  # bounded by --hours
            time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
