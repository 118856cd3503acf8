"""``nlsq-flow``: run fits as Prefect flows from a terminal.

Commands::

    nlsq-flow run --preset auto --data ./data.npz --model exponential_decay [--p0 1 1 0] [--storage DIR] [--goal quality]
    nlsq-flow demo [--n 200000] [--dir ./.nlsq_demo]
    nlsq-flow presets [NAME]
    nlsq-flow inspect URI          # a result directory (summary, manifest) or a checkpoint location
    nlsq-flow batch --data 'runs/*.npz' --model ... | --stack stack.npz   # many data sets (flows/cli_batch.py)
    nlsq-flow plan DATA_URI --model M [--preset P] [--json]   # what a run would do and why; fits nothing

With no ``PREFECT_API_URL`` configured, the CLI starts a temporary local Prefect server
(SQLite in ``PREFECT_HOME``) and stops it at exit: nothing to start by hand. A watchdog
process stops that server, and marks the run CRASHED, if the CLI is killed
(:mod:`flows.cli_server`).

Exit codes: 0 the fit succeeded; 1 the run failed (a check refused the request, storage
failed, or the fit did not succeed); 2 the request was refused before anything ran; 3 the
fit did not succeed and ``--on-failed-fit warn`` completed the run with a warning.
``inspect`` exits 1 for an incomplete result. Without ``--storage``, results go to
``./nlsq_results/runs/<run name>/`` (or under ``NLSQ_STORAGE_ROOT``) and checkpoints are
keyed by the problem, so re-running a killed streaming fit with the same arguments resumes
it. ``demo`` points ``PREFECT_HOME`` into its own directory when none is set, so a fresh
clone works without touching ``~/.prefect``. Telemetry is switched off (the machine may
have no network). On a terminal, a progress bar on stderr follows the fit (by pass for
streaming fits, by iteration otherwise); piped or redirected, the command is quiet.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Optional, Sequence


def _quiet_prefect_defaults(prefect_home: Optional[str] = None) -> None:
    """Terminal defaults; explicit user settings (environment, profile) always win.

    Prefect is already imported when the console script starts (the package imports it),
    so Prefect settings are applied with :func:`_local_settings` around the run, and logger
    levels directly here."""
    # A progress bar on stderr when it is a terminal (flows.progress checks the TTY again).
    os.environ.setdefault("NLSQ_FLOW_PROGRESS_BAR", "1")
    os.environ.setdefault("NLSQ_FLOW_ECHO_PROGRESS", "1")  # the batch command's bar (flows.batch_progress)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if prefect_home and "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        os.makedirs(prefect_home, exist_ok=True)
        os.environ["PREFECT_HOME"] = os.path.abspath(prefect_home)  # for the temporary server process
    if "PREFECT_LOGGING_LEVEL" not in os.environ:
        for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # Failures are reported by the CLI itself, in one line naming the field: Prefect's
    # console records of them (with tracebacks) stay out of the terminal. They still reach
    # the API's logs; other warnings still show.
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):  # "": the root's console handler
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not any(isinstance(f, _NoErrorRecords) for f in handler.filters):
                handler.addFilter(_NoErrorRecords())


class _NoErrorRecords(logging.Filter):
    """Drops Prefect's error records (with their tracebacks) from the terminal only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or not record.name.startswith("prefect")


@contextmanager
def _local_settings():
    """Prefect settings for a terminal run: a generous start-up time for the temporary local
    server (its 20 s default is short on a busy 2-core machine), no telemetry, and the
    PREFECT_HOME chosen by :func:`_quiet_prefect_defaults`."""
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates: dict = {}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 120
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    if "PREFECT_HOME" in os.environ:
        updates[PREFECT_HOME] = os.environ["PREFECT_HOME"]
    with temporary_settings(updates=updates):
        yield


# -- run ------------------------------------------------------------------------------------
def _build_request(args) -> Any:
    from .request import FitRequest

    payload: dict[str, Any] = {
        "data": {"uri": args.data, "format": args.format, "x": _key(args.x), "y": _key(args.y),
                 "sigma": _key(args.sigma), "ignore_sigma": args.ignore_sigma},
        "model": args.model,
        "preset": args.preset,
        "goal": args.goal,
        "memory_limit_gb": args.memory_limit_gb,
        "storage_uri": getattr(args, "storage", None),
        "absolute_sigma": args.absolute_sigma,
        "plot": not getattr(args, "no_plot", False),
        "resume": not getattr(args, "no_resume", False),
        "executor": getattr(args, "executor", "local"),
    }
    if getattr(args, "on_failed_fit", None):
        payload["on_failed_fit"] = args.on_failed_fit
    for name in ("p0", "lower", "upper"):
        if getattr(args, name) is not None:
            payload[name] = getattr(args, name)
    overrides = {k: getattr(args, k) for k in ("strategy", "tolerance", "n_starts", "chunk_size", "max_nfev")
                 if getattr(args, k) is not None}
    if overrides:
        payload["overrides"] = overrides
    return FitRequest.model_validate(payload)


def _key(text: Optional[str]):
    """A column name, or an index for .npy columns ("0"); a comma-separated list for several x."""
    if text is None:
        return None
    parts = [int(p) if p.strip().lstrip("-").isdigit() else p.strip() for p in text.split(",")]
    return parts if len(parts) > 1 else parts[0]


# Exit codes of `nlsq-flow run` and `demo` (the PBS/SLURM scripts `exec` the CLI, so a job
# ends with the same code):
EXIT_OK = 0  # the fit succeeded
EXIT_FAILED = 1  # the run failed: a check refused the request, storage failed, or the fit did not succeed
EXIT_BAD_REQUEST = 2  # the request was refused before anything ran (nothing was written)
EXIT_WARNED = 3  # on_failed_fit='warn': the fit did not succeed and the run completed with a warning


def run_flow_locally(flow, request, label: str):
    """Run ``flow(request)`` on the CLI's temporary server; ``(state, wall seconds)``.
    A state that did not complete is reported on stderr (``state.is_completed()`` tells)."""
    from prefect import tags

    from .cli_server import cli_tag, temporary_server

    t0 = time.perf_counter()
    with _local_settings(), temporary_server(), tags(cli_tag()):
        state = flow(request, return_state=True)
    wall = time.perf_counter() - t0
    if not state.is_completed():
        try:
            state.result()
            message = state.message
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        print(f"{label} {state.name}: {message}", file=sys.stderr)
    return state, wall


def _run_and_print(request, as_json: bool) -> int:
    from .fit_flow import fit_flow

    state, wall = run_flow_locally(fit_flow, request, "fit flow")
    if not state.is_completed():
        return EXIT_FAILED
    out = state.result()
    code = EXIT_WARNED if out.get("fit_failed") else EXIT_OK
    if code == EXIT_WARNED:
        print(f"warning: the fit did not succeed ({out.get('status')}: {out.get('message')}); the run completed "
              "with warnings (on_failed_fit='warn')", file=sys.stderr)
    if as_json:
        print(json.dumps(out, indent=2, default=str))
        return code
    report = _read_report(out["uris"])
    print(report if report else json.dumps(out.get("params"), indent=2))
    print()
    print(f"strategy: {out['strategy']} -- {out['reason']}")
    if out.get("validation") is not None:
        print(f"validation: {'passed' if out['validation'].get('passed') else 'FAILED'}")
    for note in out.get("notes", []):
        print(f"note: {note}")
    print(f"results: {out['uris'].get('results_dir')}")
    for key in ("plot", "validation"):
        if out["uris"].get(key):
            print(f"{key}: {out['uris'][key]}")
    print(f"flow wall time: {wall:.2f} s")
    return code


def _read_report(uris: dict) -> Optional[str]:
    from nlsq_tasks.io import load_text

    from .resolve import join

    candidates = [v for k, v in uris.items() if str(v).endswith("report.txt")]
    candidates.append(join(uris.get("results_dir", "."), "report.txt"))
    for uri in candidates:
        try:
            return load_text(uri)
        except Exception:
            continue
    return None


def describe_invalid(exc: BaseException) -> str:
    """A request's validation errors as ``field: problem`` lines, without the values (a value
    may hold a credential, e.g. in a URI)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    lines = []
    for e in errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in e.get("loc", ()) if not str(p).startswith("function-")) or "request"
        lines.append(f"{field}: {e.get('msg')}")
    return "; ".join(lines)


def _cli_policy_roots(args) -> None:
    """The CLI is the local user's own tool: unless the deployment set NLSQ_STORAGE_ROOTS,
    the places named on the command line are allowed roots (with the working directory and
    NLSQ_STORAGE_ROOT). Protocols stay as NLSQ_STORAGE_PROTOCOLS says."""
    from nlsq_tasks.io.policy import ROOT_SETTING, ROOTS_SETTING, uri_protocol

    if os.environ.get(ROOTS_SETTING):
        return
    roots = [os.getcwd()] + ([os.environ[ROOT_SETTING]] if os.environ.get(ROOT_SETTING) else [])
    for value in (getattr(args, "data", None), getattr(args, "storage", None), getattr(args, "preset", None)):
        if value and uri_protocol(value) == "file" and ("/" in value or os.sep in value or value.endswith((".yaml", ".yml"))):
            path = os.path.abspath(value[len("file://"):] if value.startswith("file://") else value)
            roots.append(path if getattr(args, "storage", None) == value else os.path.dirname(path))
    os.environ[ROOTS_SETTING] = ",".join(dict.fromkeys(roots))


def cmd_run(args) -> int:
    try:
        request = _build_request(args)
    except Exception as exc:  # pydantic's message names the field and the rule
        print(f"invalid request: {describe_invalid(exc)}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    _cli_policy_roots(args)
    try:  # the worker's storage policy, before Prefect starts (nothing is read or written)
        from .resolve import check_policy, default_storage_uri

        check_policy(request.data.uri, request.preset_spec, request.storage_uri or default_storage_uri())
    except ValueError as exc:
        print(f"invalid request: {exc}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    _quiet_prefect_defaults()
    return _run_and_print(request, args.json)


# -- demo -----------------------------------------------------------------------------------
DEMO_TRUE = {"a": 2.5, "b": 0.7, "c": 0.3}


def write_demo_data(directory: str, n: int, seed: int = 0) -> str:
    """``a*exp(-b*x) + c`` with Gaussian noise (sigma 0.05) as an .npz of x, y, sigma; returns its path."""
    import numpy as np

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, n)
    sigma = np.full(n, 0.05)
    y = DEMO_TRUE["a"] * np.exp(-DEMO_TRUE["b"] * x) + DEMO_TRUE["c"] + rng.normal(0.0, 0.05, n)
    path = os.path.join(directory, f"demo_exp_decay_{n}.npz")
    tmp = path + ".tmp.npz"
    np.savez(tmp, x=x, y=y, sigma=sigma)
    os.replace(tmp, path)  # a killed demo never leaves half a data file
    return path


def cmd_demo(args) -> int:
    directory = os.path.abspath(args.dir)
    _quiet_prefect_defaults(prefect_home=os.path.join(directory, "prefect_home"))
    from .request import FitRequest

    path = write_demo_data(directory, args.n)
    print(f"demo data: {path} ({args.n:,} points of a*exp(-b*x)+c, true a, b, c = "
          f"{DEMO_TRUE['a']}, {DEMO_TRUE['b']}, {DEMO_TRUE['c']})")
    storage = os.path.join(directory, "results", time.strftime("%Y%m%d-%H%M%S"))
    request = FitRequest.model_validate({
        "data": {"uri": path, "sigma": "sigma"},
        "model": "a*exp(-b*x) + c",
        "p0": [1.0, 1.0, 0.0],
        "preset": args.preset,
        "goal": args.goal,
        "absolute_sigma": True,
        "storage_uri": storage,
        "memory_limit_gb": args.memory_limit_gb,
    })
    print(f"running fit_flow ({_prefect_target()})...", flush=True)
    return _run_and_print(request, args.json)


def _prefect_target() -> str:
    """Where the flow run is recorded: the configured Prefect API, or a temporary local server."""
    from prefect.settings import PREFECT_API_URL

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    return f"Prefect API at {url}" if url else "a temporary local Prefect server, stopped at exit"


# -- presets and inspect ------------------------------------------------------------------
def cmd_presets(args) -> int:
    from nlsq_tasks.workflow import list_presets, load_preset

    if args.name:
        try:
            preset = load_preset(args.name)
        except Exception as exc:
            print(str(exc), file=sys.stderr)
            return 2
        import yaml

        print(yaml.safe_dump(preset.to_dict(), sort_keys=False).rstrip())
        return 0
    for name in list_presets():
        p = load_preset(name)
        print(f"{name:<18} strategy={p.strategy:<9} {p.description}")
    return 0


def cmd_inspect(args) -> int:
    """Exit 0 for a complete result or checkpoints, 1 for an incomplete result, 2 when the
    location holds neither or cannot be read."""
    from .stored import describe_location

    try:
        text = describe_location(args.uri)
    except Exception as exc:
        print(f"cannot inspect {args.uri}: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 1 if "INCOMPLETE:" in text else 0


def cmd_plan(args) -> int:
    """What ``run`` would do with these arguments, and why: the plan, from the data's
    metadata only (nothing is fitted, nothing is written, no Prefect server is needed)."""
    from .tasks import checked_request, data_info, plan_request

    try:
        request = _build_request(args)
        _cli_policy_roots(args)
        from .resolve import check_policy, default_storage_uri

        check_policy(request.data.uri, request.preset_spec, default_storage_uri())  # reads nothing
        checked = checked_request(request)
        plan = plan_request(data_info(request.data), checked, request)
    except Exception as exc:  # errors name the field, the value and what is allowed
        print(f"cannot plan: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2, default=str))
    else:
        print(f"model:       {checked['model']} ({', '.join(checked['param_names'])})")
        print(plan.describe())
    return 0


# -- argparse -----------------------------------------------------------------------------
def add_column_arguments(r: argparse.ArgumentParser) -> None:
    """Where x, y and sigma are in the data files and how sigma counts (run, plan and batch)."""
    from .request import DataFormat

    r.add_argument("--format", default="auto", choices=[f.value for f in DataFormat])
    r.add_argument("--x", help="x column/key (npy: index; several features: a,b)")
    r.add_argument("--y", help="y column/key")
    r.add_argument("--sigma", help="sigma column/key (default: the file's sigma if any)")
    r.add_argument("--ignore-sigma", action="store_true", dest="ignore_sigma")
    r.add_argument("--absolute-sigma", action="store_true", dest="absolute_sigma")


def _add_fit_arguments(r: argparse.ArgumentParser) -> None:
    """The request's options shared by ``run`` and ``plan``; choices come from the library's registries."""
    from nlsq_tasks.strategies import strategy_names
    from nlsq_tasks.workflow import OptimizationGoal

    r.add_argument("--model", required=True, help="built-in model name or expression in x, e.g. 'a*exp(-b*x)+c'")
    r.add_argument("--preset", default="auto", help="preset name or YAML path/URI (default auto)")
    r.add_argument("--p0", type=float, nargs="+")
    r.add_argument("--lower", type=float, nargs="+")
    r.add_argument("--upper", type=float, nargs="+")
    r.add_argument("--goal", choices=[g.name.lower() for g in OptimizationGoal])
    r.add_argument("--memory-limit-gb", type=float, dest="memory_limit_gb")
    r.add_argument("--strategy", choices=["auto", *strategy_names()])
    r.add_argument("--tolerance", type=float)
    r.add_argument("--n-starts", type=int, dest="n_starts")
    r.add_argument("--chunk-size", type=int, dest="chunk_size")
    r.add_argument("--max-nfev", type=int, dest="max_nfev")
    add_column_arguments(r)
    r.add_argument("--executor", default="local",
                   help="where the passes run: local (default), local-cluster:N (a temporary Dask cluster of N "
                        "worker processes) or a Dask scheduler address tcp://host:8786")


def _parser() -> argparse.ArgumentParser:
    from nlsq_tasks.workflow import OptimizationGoal

    p = argparse.ArgumentParser(prog="nlsq-flow", description="Nonlinear least-squares fits as Prefect 3 flows.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run fit_flow on one data set")
    r.add_argument("--data", required=True, help="data URI (.npy, .npz, .csv, .parquet; local, s3://, memory://)")
    _add_fit_arguments(r)
    r.add_argument("--storage", help="where results and checkpoints go (default ./nlsq_results/<run name>)")
    r.add_argument("--no-plot", action="store_true", dest="no_plot")
    r.add_argument("--no-resume", action="store_true", dest="no_resume")
    r.add_argument("--on-failed-fit", choices=["fail", "warn"], dest="on_failed_fit",
                   help="a fit that does not succeed: fail the run (exit 1, default) or complete with a warning (exit 3)")
    r.add_argument("--json", action="store_true", help="print the flow's return value as JSON")
    r.set_defaults(func=cmd_run)

    pl = sub.add_parser("plan", help="print what run would do and why (the plan), without fitting")
    pl.add_argument("data", help="data URI (.npy, .npz, .csv, .parquet; local, s3://, memory://)")
    _add_fit_arguments(pl)
    pl.add_argument("--json", action="store_true", help="print the plan as JSON (FitPlan.to_dict())")
    pl.set_defaults(func=cmd_plan)

    d = sub.add_parser("demo", help="write a synthetic data set to ./.nlsq_demo and fit it with fit_flow")
    d.add_argument("--n", type=_points, default=200_000, help="number of points, 10 to 1e9 (default 2e5)")
    d.add_argument("--dir", default=".nlsq_demo")
    d.add_argument("--preset", default="auto")
    d.add_argument("--goal", choices=[g.name.lower() for g in OptimizationGoal])
    d.add_argument("--memory-limit-gb", type=float, dest="memory_limit_gb")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)

    ps = sub.add_parser("presets", help="list presets, or show one")
    ps.add_argument("name", nargs="?")
    ps.set_defaults(func=cmd_presets)

    i = sub.add_parser("inspect", help="show a stored result directory or a checkpoint location")
    i.add_argument("uri")
    i.set_defaults(func=cmd_inspect)

    from .cli_batch import add_parser as add_batch_parser

    add_batch_parser(sub)
    return p


def _points(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 10 <= n <= 1_000_000_000:
        raise argparse.ArgumentTypeError(f"{n} is outside the allowed 10 to 1000000000 points")
    return n


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # no traceback for the user: one line that says what failed
        print(f"nlsq-flow {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
