"""fsspec plumbing shared by the sources and the stores: resolving a URI, atomic writes.

Atomicity, by backend
---------------------
* local files: write ``.<name>.tmp-<random>`` in the same directory, flush and fsync, then
  ``os.replace`` onto the final name (atomic on POSIX within one file system);
* object stores (``s3``, ``gs``, ``az``...): one PUT creates the object atomically -- readers see
  the old object or the whole new one, never a part -- so the object is written directly;
* anything else (``memory://``, ``ftp``...): write a temporary sibling, then ``mv`` it onto the
  final name.

A failure during the write leaves the previous object (if any) untouched; a temporary file
that a killed process could not remove is ignored by every reader here (names starting
with ``.`` or containing ``.tmp-``), and removed by the next write in its directory
(:func:`clean_stale_temporaries`: the temp name carries the writer's host and pid).
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from pathlib import PurePath
from typing import Any, Mapping

from ._errors import StorageError, scrub, storage_errors

OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"})


def to_uri(uri: Any) -> str:
    if isinstance(uri, PurePath):
        return str(uri)
    if not isinstance(uri, str) or not uri:
        raise TypeError(f"uri must be a non-empty string or a path, got {type(uri).__name__} {uri!r}")
    return uri


def resolve(uri: Any, storage_options: Mapping[str, Any] | None = None):
    """``(filesystem, path)`` for ``uri``; errors name the URI (scrubbed), never credentials."""
    import fsspec.core

    from .retry import with_timeouts

    uri = to_uri(uri)
    proto = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    try:
        with storage_errors(uri, "open", storage_options):
            return fsspec.core.url_to_fs(uri, **with_timeouts(proto, storage_options))
    except ValueError as exc:  # unknown protocol, bad option
        raise StorageError(f"could not open {scrub(uri, storage_options)}: {scrub(str(exc), storage_options)}") from None
    except ImportError as exc:  # e.g. s3fs not installed
        raise StorageError(f"could not open {scrub(uri, storage_options)}: the storage backend is not installed ({exc})") from None
    except TypeError as exc:  # an option the backend does not accept
        raise StorageError(
            f"could not open {scrub(uri, storage_options)}: storage_options rejected by the backend "
            f"({scrub(str(exc), storage_options)})"
        ) from None


def protocol(fs) -> str:
    p = fs.protocol
    return p[0] if isinstance(p, (tuple, list)) else p


def is_local(fs) -> bool:
    return protocol(fs) in ("file", "local")


def is_object_store(fs) -> bool:
    return protocol(fs) in OBJECT_STORES


def join(uri: str, name: str) -> str:
    return uri.rstrip("/") + "/" + name


def is_temporary(name: str) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return base.startswith(".") or ".tmp-" in base


_HOST = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40] or "host"
# .<name>.tmp-<host>.<pid>.<random>: who wrote it, so that the next writer can tell a
# leftover of a killed process (clean it) from a write in progress (leave it).
_TEMP = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{12}$")
STALE_TEMP_S = 3600.0  # a temp file of another host is removed when older than this


def _temp_sibling(path: str) -> str:
    head, _, base = path.rpartition("/")
    name = f".{base}.tmp-{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
    return f"{head}/{name}" if head else name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale_temporaries(fs, directory: str, now: float | None = None) -> list[str]:
    """Remove temporary files that killed writers left in ``directory``; returns their paths.

    A temporary is stale when its writer (host and pid are in its name) is this host's and no
    longer alive, or when it is older than ``STALE_TEMP_S``. Writes in progress are left
    alone. Bounded by the directory listing; errors are ignored (cleaning is best effort)."""
    removed: list[str] = []
    try:
        entries = fs.ls(directory, detail=True)
    except (FileNotFoundError, OSError):
        return removed
    now = time.time() if now is None else now
    for e in entries:
        path = str(e.get("name", "")).rstrip("/")
        m = _TEMP.match(path.rsplit("/", 1)[-1])
        if not m or e.get("type") == "directory":
            continue
        mine = m.group("host") == _HOST
        if mine and int(m.group("pid")) == os.getpid():
            continue  # this process's own write in progress (another thread)
        stale = mine and not _pid_alive(int(m.group("pid")))
        if not stale:
            mtime = e.get("mtime") or e.get("created")
            mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else mtime
            stale = mtime is not None and now - float(mtime) > STALE_TEMP_S
        if stale:
            try:
                fs.rm_file(path)
                removed.append(path)
            except (FileNotFoundError, OSError):
                pass
    return removed


def write_bytes_atomic(fs, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` on ``fs`` so that readers see all of it or none of it."""
    if is_local(fs):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        tmp = _temp_sibling(path)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the rename must not reach the disk before the data
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        clean_stale_temporaries(fs, parent or ".")
        return
    if is_object_store(fs):
        fs.pipe_file(path, data)
        return
    tmp = _temp_sibling(path)
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm_file(tmp)
    clean_stale_temporaries(fs, path.rpartition("/")[0])


def atomic_write_bytes(uri: Any, data: bytes, storage_options: Mapping[str, Any] | None = None) -> str:
    """Write ``data`` to ``uri`` atomically (see the module notes); returns the URI written."""
    from .retry import with_retries

    uri = to_uri(uri)
    fs, path = resolve(uri, storage_options)
    data = bytes(data)
    with_retries(lambda: write_bytes_atomic(fs, path, data), uri, "write", storage_options)
    return uri


def read_bytes(uri: Any, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """The bytes at ``uri`` (with the storage timeout, retried while the fault is transient)."""
    from .retry import with_retries

    uri = to_uri(uri)
    fs, path = resolve(uri, storage_options)
    return with_retries(lambda: fs.cat_file(path), uri, "read", storage_options)


def load_text(uri: Any, storage_options: Mapping[str, Any] | None = None, encoding: str = "utf-8") -> str:
    """The text at ``uri`` (e.g. a preset YAML on S3), decoded as ``encoding``."""
    return read_bytes(uri, storage_options).decode(encoding)
