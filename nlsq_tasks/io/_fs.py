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
with ``.`` or containing ``.tmp-``).
"""

from __future__ import annotations

import os
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

    uri = to_uri(uri)
    try:
        with storage_errors(uri, "open", storage_options):
            return fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
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


def _temp_sibling(path: str) -> str:
    head, _, base = path.rpartition("/")
    return f"{head}/.{base}.tmp-{uuid.uuid4().hex[:12]}" if head else f".{base}.tmp-{uuid.uuid4().hex[:12]}"


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


def atomic_write_bytes(uri: Any, data: bytes, storage_options: Mapping[str, Any] | None = None) -> str:
    """Write ``data`` to ``uri`` atomically (see the module notes); returns the URI written."""
    uri = to_uri(uri)
    fs, path = resolve(uri, storage_options)
    with storage_errors(uri, "write", storage_options):
        write_bytes_atomic(fs, path, bytes(data))
    return uri


def read_bytes(uri: Any, storage_options: Mapping[str, Any] | None = None) -> bytes:
    uri = to_uri(uri)
    fs, path = resolve(uri, storage_options)
    with storage_errors(uri, "read", storage_options):
        return fs.cat_file(path)


def load_text(uri: Any, storage_options: Mapping[str, Any] | None = None, encoding: str = "utf-8") -> str:
    """The text at ``uri`` (e.g. a preset YAML on S3), decoded as ``encoding``."""
    return read_bytes(uri, storage_options).decode(encoding)
