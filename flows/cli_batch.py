"""``nlsq-flow batch``: one model on many data sets, as a batched Prefect flow run.

::

    nlsq-flow batch --data 'runs/*.npz' --model 'a*exp(-b*x) + c' --p0 1 1 0 [--storage DIR]
    nlsq-flow batch --stack pixels.npz --model gaussian [--batch-size 500] [--max-concurrency 4]
    nlsq-flow batch --data 'runs/*.npz' --model 'a*exp(-b*x) + c' --shared b     # one global fit

On a terminal a progress bar counts the data sets done (stderr; nothing when piped). The
result is one table (``<storage>/runs/<run name>/fits.parquet``); the command prints where, the counts and
the first failures. Exit status: 0 every data set fitted, 3 some failed (see the table),
1 the run failed, 2 the request is invalid.
"""

from __future__ import annotations

import json
import re
import sys

PARTIAL_FAILURE_EXIT = 3


def add_parser(sub) -> None:
    from nlsq_tasks.workflow import OptimizationGoal

    from .cli import add_column_arguments

    b = sub.add_parser("batch", help="fit one model to many data sets (a glob of files or one .npz stack)")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="a glob of data files (local, s3://...), e.g. 'runs/*.npz'")
    src.add_argument("--stack", help="one .npz holding a stack: y (K, n), x (n,) or (K, n), optional sigma")
    b.add_argument("--model", required=True, help="built-in model name or expression in x")
    b.add_argument("--preset", default="auto")
    b.add_argument("--p0", type=float, nargs="+")
    b.add_argument("--lower", type=float, nargs="+")
    b.add_argument("--upper", type=float, nargs="+")
    b.add_argument("--storage", help="where the table goes: <storage>/runs/<run name>/ (default ./nlsq_results)")
    b.add_argument("--goal", choices=[g.name.lower() for g in OptimizationGoal])
    b.add_argument("--batch-size", type=int, dest="batch_size", help="data sets per batch task (default: ~100 tasks)")
    b.add_argument("--max-concurrency", type=int, default=2, dest="max_concurrency", help="batches at once (default 2)")
    b.add_argument("--shared", nargs="+", help="parameters shared by every data set: one global fit instead")
    b.add_argument("--max-nfev", type=int, dest="max_nfev")
    b.add_argument("--tolerance", type=float)
    add_column_arguments(b)
    b.add_argument("--executor", default="local",
                   help="where the fit tasks run: local (default, threads), local-cluster:N (a temporary Dask "
                        "cluster of N worker processes) or a Dask scheduler address tcp://host:8786")
    b.add_argument("--json", action="store_true", help="print the flow's return value as JSON")
    b.set_defaults(func=cmd_batch)


def build_request(args):
    from .cli import _key
    from .request import BatchFitRequest

    data = {"format": args.format, "x": _key(args.x), "y": _key(args.y), "sigma": _key(args.sigma),
            "ignore_sigma": args.ignore_sigma}
    if args.stack:
        data["stack"] = args.stack
    else:
        data["glob"] = args.data
    payload = {
        "data": data, "model": args.model, "preset": args.preset, "goal": args.goal, "storage_uri": args.storage,
        "absolute_sigma": args.absolute_sigma, "plot": False, "batch_size": args.batch_size,
        "max_concurrency": args.max_concurrency, "global_shared": args.shared, "executor": args.executor,
    }
    for name in ("p0", "lower", "upper"):
        if getattr(args, name) is not None:
            payload[name] = getattr(args, name)
    overrides = {k: getattr(args, k) for k in ("tolerance", "max_nfev") if getattr(args, k) is not None}
    if overrides:
        payload["overrides"] = overrides
    return BatchFitRequest.model_validate(payload)


def cmd_batch(args) -> int:
    import types


    from .cli import _cli_policy_roots, _quiet_prefect_defaults, describe_invalid

    try:
        request = build_request(args)
    except Exception as exc:  # names the field and the rule (never the value: it may hold a credential)
        print(f"invalid request: {describe_invalid(exc)}", file=sys.stderr)
        return 2
    # the places named on the command line are the local user's own (see flows.cli)
    glob_dir = None if args.stack or not args.data else re.split(r"[*?\[]", args.data, maxsplit=1)[0] + "x"
    _cli_policy_roots(types.SimpleNamespace(data=args.stack or glob_dir, storage=args.storage, preset=args.preset))
    _quiet_prefect_defaults()
    from .batch_flow import batch_fit_flow

    from .cli import run_flow_locally

    state, wall = run_flow_locally(batch_fit_flow, request, "batch flow")
    if not state.is_completed():
        return 1
    out = state.result()
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    elif out.get("global"):
        print(out["report"])
        print(f"results: {out['uris'].get('results_dir', out['storage_uri'])}")
    else:
        print(f"{state.name}: {out['n_ok']} of {out['n_datasets']} data sets fitted, {out['n_failed']} failed, "
              f"in {out['n_batches']} batches")
        print(f"table: {out['table']}")
        if out["n_failed"]:
            _print_failures(out["table"], request)
    print(f"flow wall time: {wall:.2f} s", file=sys.stderr)
    return PARTIAL_FAILURE_EXIT if out.get("n_failed") else 0


def _print_failures(table_uri: str, request, limit: int = 10) -> None:
    from nlsq_tasks.io import read_table

    try:
        table = read_table(table_uri, storage_options=request.storage.resolved_options())
    except Exception as exc:
        print(f"(could not read the table back: {exc})", file=sys.stderr)
        return
    bad = [i for i, ok in enumerate(table["success"]) if not ok]
    for i in bad[:limit]:
        why = table["error"][i] or table["message"][i]
        print(f"  failed: {table['dataset'][i]}: {why}")
    if len(bad) > limit:
        print(f"  ... and {len(bad) - limit} more (see the table)")
