"""Runs own their storage: a run directory each, and one writer per problem's checkpoints.

Layout under a ``storage_uri`` (see :func:`flows.resolve.layout`)::

    runs/<run name>/     one per run, claimed before the fit: run.json, then the result files
    checkpoints/p-<..>/  one directory per problem (nlsq_tasks.io.CheckpointStore)
    checkpoints/locks/   <problem key>.json: who is writing that problem's checkpoints now

* :func:`claim_run_dir` creates ``runs/<name>/run.json`` exclusively. A second run that
  arrives with the same name (a name chosen by hand, a re-run) writes beside it, in
  ``<name>-2``, ``<name>-3``...: nothing is ever overwritten.
* :class:`ProblemLock` is held by a streaming fit while it writes checkpoints. A second run
  of the same problem on the same storage is refused at once with a message naming the
  holder; a lock whose holder is dead (this host: its pid is gone; another host: no
  heartbeat for ``LEASE_S``) is taken over, and the dead holder's flow run is marked
  CRASHED. Two *different* problems never share a lock (nor checkpoints).

Local files use ``O_CREAT | O_EXCL`` (atomic); other stores write and read back, which is
enough to tell a live holder from a dead one (the case that matters: a killed run re-run).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Optional

from nlsq_tasks.io import (
    StorageError, is_local, is_object_store, resolve, scrub, storage_errors, write_bytes_atomic,
)

log = logging.getLogger("flows.ownership")

RUNS_DIR = "runs"
LOCKS_DIR = "locks"
RUN_RECORD = "run.json"
LEASE_S = 600.0  # a holder on another host that has not written a heartbeat for this long is dead
HEARTBEAT_S = 60.0
MAX_SIBLINGS = 1000


class StorageInUseError(StorageError):
    """Another live run is writing this problem's checkpoints at this storage location."""

    field = "storage_uri"


def _now() -> float:
    return time.time()


def owner_record(run_name: str, flow_run_id: Optional[str]) -> dict[str, Any]:
    return {
        "run_name": run_name,
        "flow_run_id": flow_run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "heartbeat": _now(),
        "token": uuid.uuid4().hex,
    }


def _create_exclusive(fs, path: str, data: bytes) -> bool:
    """Create ``path`` only if it does not exist; True when this call created it."""
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    if fs.exists(path):
        return False
    if not is_object_store(fs):
        fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    write_bytes_atomic(fs, path, data)
    return json.loads(fs.cat_file(path)).get("token") == json.loads(data).get("token")


def claim_run_dir(storage_uri: str, run_name: str, storage_options: Optional[dict], record: dict) -> str:
    """The URI of a new run directory ``runs/<run_name>[-k]`` under ``storage_uri``, claimed
    by writing its ``run.json`` exclusively; never one that another run has claimed."""
    from .resolve import join, safe_name

    base = safe_name(run_name)
    fs, root = resolve(storage_uri, storage_options)
    root = root.rstrip("/")
    payload = json.dumps(record, indent=2).encode()
    with storage_errors(storage_uri, "claim a run directory in", storage_options):
        for k in range(1, MAX_SIBLINGS + 1):
            name = base if k == 1 else f"{base}-{k}"
            if _create_exclusive(fs, f"{root}/{RUNS_DIR}/{name}/{RUN_RECORD}", payload):
                return join(storage_uri, RUNS_DIR, name)
    raise StorageError(f"storage_uri={scrub(storage_uri)!r}: {MAX_SIBLINGS} runs named {base!r} already exist there")


def _alive(holder: dict) -> bool:
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", -1)), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError, OverflowError):
            return True
        return True
    return _now() - float(holder.get("heartbeat") or 0) < LEASE_S


class ProblemLock:
    """Exclusive right to write one problem's checkpoints under ``checkpoints_uri``.

    Use as a context manager; ``on_stale(holder)`` is called when a dead holder's lock is
    taken over (the flow marks that holder's flow run CRASHED)."""

    def __init__(self, checkpoints_uri: str, key: str, storage_options: Optional[dict], record: dict,
                 on_stale=None):
        self.uri = checkpoints_uri
        self.key = key
        self.options = storage_options
        self.record = dict(record)
        self.on_stale = on_stale
        self._fs, root = resolve(checkpoints_uri, storage_options)
        self._path = f"{root.rstrip('/')}/{LOCKS_DIR}/{key}.json"
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    def _read(self) -> Optional[dict]:
        try:
            return json.loads(self._fs.cat_file(self._path))
        except FileNotFoundError:
            return None
        except ValueError:  # a torn lock file: nobody can own it
            return {}

    def acquire(self) -> "ProblemLock":
        data = json.dumps(self.record).encode()
        with storage_errors(self.uri, "lock the checkpoints in", self.options):
            for _ in range(3):  # a stale lock removed, then created; a racing taker makes us retry once
                if _create_exclusive(self._fs, self._path, data):
                    self._start_heartbeat()
                    return self
                holder = self._read()
                if holder is None:
                    continue  # released meanwhile
                if holder and _alive(holder):
                    raise StorageInUseError(
                        f"storage_uri={scrub(self.uri.rsplit('/', 1)[0])!r}: the checkpoints of this problem are being "
                        f"written by run {holder.get('run_name')!r} (pid {holder.get('pid')} on {holder.get('host')}, "
                        f"since {holder.get('started')}). Wait for it to end, or give this run another storage_uri; "
                        "nothing was written."
                    )
                log.warning("taking over the checkpoints of problem %s from a dead run %r (pid %s on %s)",
                            self.key, holder.get("run_name"), holder.get("pid"), holder.get("host"))
                if self.on_stale is not None and holder:
                    try:
                        self.on_stale(holder)
                    except Exception as exc:  # marking the dead run is a courtesy; never block the fit
                        log.warning("could not mark the dead run %r crashed: %s", holder.get("run_name"), exc)
                try:
                    self._fs.rm_file(self._path)
                except FileNotFoundError:
                    pass
        raise StorageInUseError(f"storage_uri: could not take the checkpoint lock {self.key} (another run keeps taking it)")

    def _start_heartbeat(self) -> None:
        def beat():
            for _ in range(10**7):  # bounded; ends when the lock is released
                if self._stop.wait(HEARTBEAT_S):
                    return
                try:
                    write_bytes_atomic(self._fs, self._path, json.dumps({**self.record, "heartbeat": _now()}).encode())
                except Exception as exc:  # a missed heartbeat only shortens the lease
                    log.warning("checkpoint lock heartbeat failed: %s", scrub(str(exc), self.options))

        self._beat = threading.Thread(target=beat, name=f"nlsq-lock-{self.key[:8]}", daemon=True)
        self._beat.start()

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        try:
            holder = self._read()
            if holder and holder.get("token") == self.record["token"]:
                self._fs.rm_file(self._path)
        except Exception as exc:  # the next run takes a dead lock over anyway
            log.warning("could not release the checkpoint lock %s: %s", self.key, scrub(str(exc), self.options))

    def __enter__(self) -> "ProblemLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def mark_flow_run_crashed(holder: dict) -> None:
    """Set the dead holder's flow run CRASHED when the API still shows it running."""
    flow_run_id = holder.get("flow_run_id")
    if not flow_run_id:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.type.value in ("RUNNING", "PENDING", "SCHEDULED"):
            client.set_flow_run_state(
                flow_run_id,
                Crashed(message=f"its process (pid {holder.get('pid')} on {holder.get('host')}) died; "
                                "a later run of the same problem took over its checkpoints"),
                force=True,
            )
