"""The CLI's temporary Prefect server, and what happens to it when the CLI is killed.

Without ``PREFECT_API_URL``, Prefect would start a temporary server inside the flow call
and stop it at exit (``atexit``). A ``kill -9`` skips ``atexit``: the server process stayed
up for good, and the run it was serving stayed RUNNING. So the CLI starts that server
itself (:func:`temporary_server`, the same ``SubprocessASGIServer`` Prefect uses) together
with a small watchdog process (``python -m flows.cli_server``, its own session, so a signal
to the CLI's process group does not reach it; run as a script, it imports only the standard
library until it has work to do). The watchdog polls the CLI's pid; when the
CLI is gone without having said goodbye it

1. marks the CLI's flow runs (found by the tag ``nlsq-cli:<host>:<pid>``) that are still
   RUNNING or PENDING as CRASHED, and
2. stops the server (SIGTERM, then SIGKILL after 5 s).

On a normal exit the CLI stops the server and the watchdog itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator, Optional

POLL_S = 0.5
MAX_WATCH_S = 30 * 24 * 3600.0  # a watchdog never outlives a month-long fit (bounded loop)


def cli_tag(pid: Optional[int] = None) -> str:
    return f"nlsq-cli:{socket.gethostname()}:{pid or os.getpid()}"


@contextlib.contextmanager
def temporary_server(timeout_s: int = 120) -> Iterator[Optional[str]]:
    """Start a temporary Prefect server and its watchdog when no API is configured; yields
    the API URL (None when ``PREFECT_API_URL`` is set: the configured server is used)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value():
        yield None
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=timeout_s)
    watchdog = None
    try:
        pid = server.server_process.pid if server.server_process else 0
        # Run as a script (not -m flows...): the watchdog imports only the standard library
        # until it has something to do, so it costs a few MB while the fit runs.
        watchdog = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--parent", str(os.getpid()), "--server-pid", str(pid),
             "--api", server.api_url, "--tag", cli_tag()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        _drain_to_api()  # logs and events queued for this server go out before it stops
        server.stop()
        if watchdog is not None:
            watchdog.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=5)


def _drain_to_api() -> None:
    """Send what Prefect still has queued (logs, events) while the server is up; otherwise
    they are sent at interpreter exit to a stopped server ("Error logging to API")."""
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped by its parent) is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def mark_runs_crashed(api_url: str, tag: str) -> int:
    """Set this CLI's still-running flow runs CRASHED; returns how many."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[tag]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])),
        ), limit=200)
        for run in runs:
            client.set_flow_run_state(run.id, Crashed(message="the nlsq-flow process running it was killed"), force=True)
        return len(runs)


def _stop(pid: int) -> None:
    if pid <= 0 or not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def watch(parent: int, server_pid: int, api_url: str, tag: str) -> int:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # the CLI ended normally and says so
    for _ in range(int(MAX_WATCH_S / POLL_S)):
        if not _alive(parent):
            break
        if server_pid and not _alive(server_pid):
            return 0  # the server is gone already: nothing to clean up
        time.sleep(POLL_S)
    else:
        return 0
    with contextlib.suppress(Exception):  # best effort: the server may be unusable
        mark_runs_crashed(api_url, tag)
    _stop(server_pid)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--api", required=True)
    p.add_argument("--tag", required=True)
    a = p.parse_args(argv)
    return watch(a.parent, a.server_pid, a.api, a.tag)


if __name__ == "__main__":
    sys.exit(main())
