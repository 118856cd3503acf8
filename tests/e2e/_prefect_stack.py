"""A real Prefect stack for end-to-end tests (used by conftest.py): `prefect server start`, the `prefect` CLI, and
`prefect worker start`, each a subprocess in its own process group, on 127.0.0.1 only.

Everything the stack writes (PREFECT_HOME, the sqlite database, logs) lives under one
temporary directory. Each subprocess logs to its own file; when a test fails, the tails
of those logs are printed so that a CI failure explains itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 180  # first start migrates a fresh sqlite database; 2 shared cores are slow
CLI_TIMEOUT_S = 300
STOP_GRACE_S = 15
_LOG_TAIL_CHARS = 6000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = _LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-n:]


class Service:
    """A long-running subprocess (server, worker) in its own process group, logging to a file."""

    def __init__(self, name: str, cmd: list[str], env: dict, cwd: Path, log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._log_fh = open(self.log, "wb")
        # start_new_session: the server and the worker spawn children (uvicorn, flow-run
        # processes); killing the whole group leaves no orphan behind.
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=str(cwd), stdout=self._log_fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # the leader is gone; children it left in the group must still go
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log_fh.close()


class PrefectStack:
    """A Prefect server on a free 127.0.0.1 port plus helpers to drive it like a user would."""

    def __init__(self, root: Path):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = self._environment()
        self.services: list[Service] = []
        self._cli_count = 0

    def _environment(self) -> dict:
        # Start from the caller's environment minus any Prefect profile or proxy, so that
        # nothing outside the temporary directory (or outside 127.0.0.1) is touched.
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("PREFECT_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        env.update(
            PREFECT_HOME=str(self.root / "prefect-home"),
            PREFECT_API_URL=self.api_url,
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{self.root / 'prefect.db'}",
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(self.port),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="false",
            PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",  # schedules stay inactive anyway
            PREFECT_CLI_PROMPT="false",
            PREFECT_WORKER_QUERY_SECONDS="1",  # pick runs up quickly (default 10 s)
            PREFECT_LOGGING_LEVEL="INFO",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            # CI has no GPU; pinning CPU also keeps a GPU host from changing what is tested
            JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
            PYTHONUNBUFFERED="1",
        )
        return env

    # -- processes -------------------------------------------------------------------
    def prefect_cmd(self, *args: str) -> list[str]:
        # `python -m prefect`: the CLI of the interpreter running the tests, whatever PATH says
        return [sys.executable, "-m", "prefect", *args]

    def start_service(self, name: str, *args: str, cwd: Path = REPO) -> Service:
        svc = Service(name, self.prefect_cmd(*args), self.env, cwd, self.logs)
        self.services.append(svc)
        return svc

    def start_server(self, attempts: int = 3) -> None:
        """Start the server and wait for /api/health. free_port() can race with another
        process taking the port before the server binds it: then retry on a new port."""
        for attempt in range(1, attempts + 1):
            server = self.start_service(
                "server" if attempt == 1 else f"server-{attempt}",
                "server", "start", "--host", "127.0.0.1", "--port", str(self.port),
                "--no-ui", "--analytics-off", "--no-scheduler",
            )
            if self._wait_healthy(server):
                return
            log = _tail(server.log).lower()
            if ("already in use" not in log and "address in use" not in log) or attempt == attempts:
                raise RuntimeError(f"prefect server exited with {server.proc.returncode}:\n{_tail(server.log)}")
            server.stop()
            self._use_port(free_port())

    def _wait_healthy(self, server: Service) -> bool:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not server.alive():
                return False
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200 and json.loads(r.read()) is True:
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {SERVER_START_TIMEOUT_S}s:\n{_tail(server.log)}")

    def _use_port(self, port: int) -> None:
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.env.update(PREFECT_API_URL=self.api_url, PREFECT_SERVER_API_PORT=str(port))

    def cli(self, *args: str, cwd: Path = REPO, check: bool = True, timeout: float = CLI_TIMEOUT_S):
        """Run one `prefect ...` command to completion; its output goes to a numbered log."""
        self._cli_count += 1
        log = self.logs / f"cli-{self._cli_count:02d}-{args[0]}.log"
        try:
            out = subprocess.run(
                self.prefect_cmd(*args), env=self.env, cwd=str(cwd), capture_output=True, text=True,
                timeout=timeout, start_new_session=True, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            log.write_text(f"$ prefect {' '.join(args)}\nTIMED OUT after {timeout}s\n{exc.stdout}\n{exc.stderr}")
            raise
        log.write_text(f"$ prefect {' '.join(args)}\n[rc={out.returncode}]\n{out.stdout}\n{out.stderr}")
        if check and out.returncode != 0:
            raise AssertionError(f"`prefect {' '.join(args)}` failed (rc={out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
        return out

    def client(self):
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)

    def stop(self) -> None:
        for svc in reversed(self.services):
            svc.stop()

    def dump_logs(self) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"===== {path.name} (tail) =====\n{_tail(path)}")
        return "\n".join(parts)
