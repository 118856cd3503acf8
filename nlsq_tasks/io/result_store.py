"""``ResultStore``: a fit's result as a directory of files, committed by a manifest.

Layout of ``<uri>/``::

    summary.json    FitResult.summary() (JSON; inf/nan as strings)
    params.npz      popt, pcov, perr, lower, upper, param_names (no pickle)
    report.txt      FitResult.report()
    <extras>        whatever the caller adds (plots, data slices), bytes
    manifest.json   written LAST: every file above with its size and SHA-256

Each file is written atomically (see :mod:`nlsq_tasks.io._fs`), and ``manifest.json`` last,
so a directory without a manifest -- or whose files do not match it -- is an incomplete
result: :func:`read_result` refuses it. Rewriting a result in place first deletes the old
manifest, so a reader never pairs an old manifest with half-new files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import re
from typing import Any, Mapping

import numpy as np

from ..engine.result import FitResult
from ._errors import StorageError, redact_options, scrub, storage_errors
from ._fs import is_object_store, join, resolve, to_uri, write_bytes_atomic
from .retry import with_retries

MANIFEST = "manifest.json"
_STANDARD = ("summary.json", "params.npz", "report.txt")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")


class IncompleteResultError(StorageError):
    """A result directory without a valid manifest, or whose files do not match it."""


def _params_npz(result: FitResult) -> bytes:
    buf = io.BytesIO()
    np.savez(
        buf,
        allow_pickle=False,
        popt=np.asarray(result.popt, dtype=np.float64),
        pcov=np.asarray(result.pcov, dtype=np.float64),
        perr=np.asarray(result.perr, dtype=np.float64),
        lower=np.asarray(result.lower, dtype=np.float64),
        upper=np.asarray(result.upper, dtype=np.float64),
        param_names=np.array(list(result.param_names), dtype=str),
    )
    return buf.getvalue()


class ResultStore:
    """Writes :class:`~nlsq_tasks.FitResult` objects under a directory URI."""

    def __init__(self, uri, storage_options: Mapping[str, Any] | None = None):
        self.uri = to_uri(uri).rstrip("/")
        self.storage_options = dict(storage_options) if storage_options else None
        self._fs, self._dir = resolve(self.uri, self.storage_options)
        self._dir = self._dir.rstrip("/")

    def __repr__(self) -> str:
        return f"ResultStore({scrub(self.uri)!r}, storage_options={redact_options(self.storage_options)!r})"

    def write(self, result: FitResult, extra_files: Mapping[str, bytes] | None = None) -> dict[str, str]:
        """Write the result (and ``extra_files``: name -> bytes); returns name -> URI,
        ``manifest.json`` included. The manifest is written after every other file."""
        files: dict[str, bytes] = {
            "summary.json": json.dumps(result.summary(), indent=2, sort_keys=False).encode(),
            "params.npz": _params_npz(result),
            "report.txt": result.report().encode(),
        }
        for name, data in (extra_files or {}).items():
            if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in _STANDARD or name == MANIFEST:
                raise ValueError(
                    f"extra_files name {name!r} is not allowed: use letters, digits, '_', '-', '.', "
                    f"no '/', not starting with '.', and none of {list(_STANDARD) + [MANIFEST]}"
                )
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"extra_files[{name!r}] must be bytes, got {type(data).__name__}")
            files[name] = bytes(data)
        return with_retries(lambda: self._write(result, files), self.uri, "write the result to", self.storage_options)

    def _write(self, result: FitResult, files: dict[str, bytes]) -> dict[str, str]:
        fs = self._fs
        if not is_object_store(fs):
            fs.makedirs(self._dir, exist_ok=True)
        manifest_path = f"{self._dir}/{MANIFEST}"
        old_files: list[str] = []
        if fs.exists(manifest_path):  # un-commit first: readers must not trust a half-rewritten directory
            try:
                old_files = list(json.loads(fs.cat_file(manifest_path)).get("files", {}))
            except (ValueError, AttributeError):
                old_files = []
            fs.rm_file(manifest_path)
        for name, data in files.items():
            write_bytes_atomic(fs, f"{self._dir}/{name}", data)
        # Files of the previous result that this one does not have (a validation.json, a
        # plot) would sit beside a different fit: remove them before committing.
        for name in old_files:
            if name not in files and _SAFE_NAME.match(name):
                try:
                    fs.rm_file(f"{self._dir}/{name}")
                except FileNotFoundError:
                    pass
        manifest = {
            "format": 1,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "status": result.status.name,
            "success": bool(result.success),
            "files": {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()},
        }
        write_bytes_atomic(fs, manifest_path, json.dumps(manifest, indent=2).encode())
        return {**{n: join(self.uri, n) for n in files}, MANIFEST: join(self.uri, MANIFEST)}

    def add_files(self, extra_files: Mapping[str, bytes]) -> dict[str, str]:
        """Add files to a committed result (a validation report, a plot) and list them in its
        manifest; returns name -> URI. Each file is written atomically, then the manifest is
        replaced atomically by one that lists it too. One writer per result directory."""
        fs = self._fs
        manifest_path = f"{self._dir}/{MANIFEST}"
        for name, data in extra_files.items():
            if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in _STANDARD or name == MANIFEST:
                raise ValueError(f"extra_files name {name!r} is not allowed (see ResultStore.write)")
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"extra_files[{name!r}] must be bytes, got {type(data).__name__}")
        def add():
            try:
                manifest = json.loads(fs.cat_file(manifest_path))
            except FileNotFoundError:
                raise IncompleteResultError(f"{scrub(self.uri)} has no {MANIFEST}: write the result first") from None
            for name, data in extra_files.items():
                data = bytes(data)
                write_bytes_atomic(fs, f"{self._dir}/{name}", data)
                manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            write_bytes_atomic(fs, manifest_path, json.dumps(manifest, indent=2).encode())

        with_retries(add, self.uri, "add files to the result at", self.storage_options)
        return {n: join(self.uri, n) for n in extra_files}


def read_result(uri, storage_options: Mapping[str, Any] | None = None) -> FitResult:
    """The :class:`~nlsq_tasks.FitResult` stored at ``uri``, equal to the one written
    (verified against the manifest first; see :func:`read_result_files`)."""
    return FitResult.from_summary(read_result_files(uri, storage_options)["summary"])


def read_result_files(uri, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read and verify a result directory written by :class:`ResultStore`.

    Returns ``{"manifest", "summary", "params", "report", "files", "extras"}`` where
    ``params`` holds numpy arrays, ``files`` maps names to URIs and ``extras`` maps extra
    file names to their bytes. Raises :class:`IncompleteResultError` when the manifest is
    missing or a file is missing or differs from it."""
    uri = to_uri(uri).rstrip("/")
    fs, base = resolve(uri, storage_options)
    base = base.rstrip("/")
    where = scrub(uri, storage_options)
    return with_retries(lambda: _read_result(fs, base, uri, where, storage_options), uri, "read the result at",
                        storage_options)


def _read_result(fs, base: str, uri: str, where: str, storage_options) -> dict[str, Any]:
    try:
        manifest = json.loads(fs.cat_file(f"{base}/{MANIFEST}"))
        entries = dict(manifest["files"])
    except FileNotFoundError:
        raise IncompleteResultError(f"{where} has no {MANIFEST}: the result is incomplete (still being written, or the writer failed)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IncompleteResultError(f"{where}/{MANIFEST} is unreadable ({exc})") from None
    blobs: dict[str, bytes] = {}
    for name, meta in entries.items():
        try:
            data = fs.cat_file(f"{base}/{name}")
        except FileNotFoundError:
            raise IncompleteResultError(f"{where}: {name} is listed in the manifest but missing") from None
        if len(data) != meta.get("size") or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise IncompleteResultError(f"{where}: {name} does not match the manifest (size or checksum)")
        blobs[name] = data
    missing = [n for n in _STANDARD if n not in blobs]
    if missing:
        raise IncompleteResultError(f"{where}: the manifest lacks {missing}")
    with np.load(io.BytesIO(blobs["params.npz"]), allow_pickle=False) as z:
        params = {k: z[k] for k in z.files}
    return {
        "manifest": manifest,
        "summary": json.loads(blobs["summary.json"]),
        "params": params,
        "report": blobs["report.txt"].decode(),
        "files": {n: join(uri, n) for n in entries} | {MANIFEST: join(uri, MANIFEST)},
        "extras": {n: d for n, d in blobs.items() if n not in _STANDARD},
    }
