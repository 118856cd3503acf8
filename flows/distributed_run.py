"""One fit over every process of a ``jax.distributed`` job: what each process of a PBS or
SLURM job (or any launcher) runs.

    python -m flows.distributed_run --data /shared/data.npy --model exponential_decay \\
        --storage /shared/runs/run42 [--preset hpc_distributed] \\
        [--coordinator host:port --num-processes N --process-id I]

Every process joins the job (:func:`nlsq_tasks.distributed.initialize`: explicit flags,
``NLSQ_*`` variables, SLURM's own variables, or PBS's node file), reads only the rows of
its own devices from ``--data`` (ranged reads through :mod:`nlsq_tasks.io`) and takes
part in the sharded fit. Process 0 alone writes checkpoints (``<storage>/checkpoints``)
and the result (``<storage>/result``); running the same command again after a crash
resumes from the latest checkpoint. Each process prints one JSON line with its view of
the result; a failure prints one clear line on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.distributed_run", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="data URI (npy/npz/csv/parquet; local, s3://, memory://)")
    p.add_argument("--model", required=True, help="built-in model name or an expression in x")
    p.add_argument("--storage", default=None, help="where process 0 writes checkpoints and the result")
    p.add_argument("--preset", default="auto", help="workflow preset (default auto)")
    p.add_argument("--p0", default=None, help="comma-separated start values")
    p.add_argument("--loss", default=None)
    p.add_argument("--strategy", default=None, choices=["standard", "chunked"])
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--max-nfev", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None, help="passes between checkpoints (default: preset, else 1)")
    p.add_argument("--x-key", default=None)
    p.add_argument("--y-key", default=None)
    p.add_argument("--sigma-key", default=None)
    p.add_argument("--coordinator", default=None, help="host:port of process 0 (explicit jobs)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--init-timeout", type=int, default=300, help="seconds to wait for every process to join")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from nlsq_tasks.distributed import initialize, spec_from_env

    where = "this process"
    try:
        spec = spec_from_env(args.coordinator, args.num_processes, args.process_id)
        joined = initialize(spec, timeout_s=args.init_timeout)
        where = f"process {joined['process_index']} of {joined['process_count']}"
        summary = _run(args, joined)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - one clear line for the job log, then a failing exit code
        resume = f" Re-run the same command to resume from the latest checkpoint in {args.storage}/checkpoints." if args.storage else ""
        print(f"nlsq distributed fit failed in {where}: {type(exc).__name__}: {exc}.{resume}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(summary), flush=True)
    if not summary.get("success"):  # a fit that did not succeed fails the job (the scripts exec this)
        print(f"nlsq distributed fit did not succeed in {where}: status {summary.get('status')}", file=sys.stderr,
              flush=True)
        return 1
    return 0


def _run(args, joined: dict) -> dict:
    import numpy as np

    from nlsq_tasks.distributed import fit_distributed, is_writer
    from nlsq_tasks.io import CheckpointStore, ResultStore, open_source
    from nlsq_tasks.limits import DEFAULT_CHUNK_SIZE

    keys = dict(x_key=args.x_key, y_key=args.y_key, sigma_key=args.sigma_key)
    source = open_source(args.data, chunk_size=DEFAULT_CHUNK_SIZE, readahead=0, **keys)

    def open_shares(rows: int):
        return open_source(args.data, chunk_size=rows, readahead=0, **keys)

    storage = args.storage.rstrip("/") if args.storage else None
    checkpoint = CheckpointStore(f"{storage}/checkpoints", keep_last=3) if storage else None
    kwargs = {k: v for k, v in dict(loss=args.loss, strategy=args.strategy, chunk_size=args.chunk_size,
                                     max_nfev=args.max_nfev).items() if v is not None}
    p0 = None if args.p0 is None else [float(v) for v in args.p0.split(",")]
    t0 = time.perf_counter()
    result = fit_distributed(args.model, source, open_shares, p0=p0, workflow=args.preset, checkpoint=checkpoint,
                             checkpoint_every=args.checkpoint_every, **kwargs)
    written = None
    if storage and is_writer():
        written = ResultStore(f"{storage}/result").write(result)
    return {
        "process_index": joined["process_index"], "process_count": joined["process_count"],
        "popt": np.asarray(result.popt).tolist(), "nfev": int(result.nfev), "status": result.status.name,
        "success": bool(result.success), "execution": result.execution, "checkpoints": result.checkpoints,
        "strategy": result.strategy, "wrote": None if written is None else sorted(written),
        "seconds": time.perf_counter() - t0,
    }


if __name__ == "__main__":
    sys.exit(main())
