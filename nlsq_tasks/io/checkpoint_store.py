"""``CheckpointStore``: the fsspec implementation of the engine's ``CheckpointSink``.

Each problem has its own directory ``<uri>/p-<hash of the fingerprint>/``, so two problems
sharing a location never read, rotate or delete each other's checkpoints. In it, one
checkpoint is one self-verifying object ``ckpt-<seq:010d>-<random>.nlsqckpt``::

    b"NLSQCKPT1\\n" + <header: one line of JSON> + b"\\n" + <payload>

The payload is an ``np.savez`` archive of the state's arrays; JSON-able values (Python
ints, floats, strings, bools, None, lists and dicts of them, such as an RNG state) travel
in the member ``__json__`` so that the checksum covers them too. The header records the
problem fingerprint, the sequence number, the UTC creation time, the payload size and its
SHA-256, and the SHA-256 of the header itself (``header_sha256``; a damaged header makes
the checkpoint damaged, never "another problem's"). ``pickle`` is never used, so loading a checkpoint cannot run code.

Writing (``save``): the object gets a *new, unique* name and is written atomically (local:
temp file + fsync + ``os.replace``; object stores: one PUT; others: temp + ``mv``, see
:mod:`nlsq_tasks.io._fs`), then a small ``latest.json`` pointer is written last as the
commit record for humans and tools. No existing checkpoint is touched until the new one is
complete; only then does rotation delete the ones older than the newest ``keep_last``.

Reading (``load_latest``): the listing is authoritative (each object proves its own
integrity, so the pointer is not needed to find the newest): newest first, a checkpoint that
fails the magic, header, size or checksum test is skipped with a warning naming it, and the
first valid one is returned. One writer per problem and location is assumed (the flows
hold a lock on it: :mod:`flows.ownership`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import re
import uuid
from typing import Any, Mapping

import numpy as np

from ..engine.checkpoint import CheckpointMismatchError, State
from ._errors import redact_options, scrub, storage_errors
from ._fs import is_object_store, is_temporary, join, resolve, to_uri, write_bytes_atomic
from .retry import with_retries

log = logging.getLogger("nlsq_tasks.io")

MAGIC = b"NLSQCKPT1\n"
_NAME = re.compile(r"^ckpt-(\d{10})-([0-9a-f]{8})\.nlsqckpt$")
_JSON_MEMBER = "__json__"
_SCALAR_MEMBER = "__numpy_scalars__"
_MAX_HEADER = 1 << 16


class CorruptCheckpointError(ValueError):
    """A checkpoint object failed its integrity checks."""


def encode_state(state: State, *, fingerprint: str, seq: int) -> bytes:
    """Serialize ``state`` (a flat dict of arrays and JSON-able values) into one checkpoint."""
    if not isinstance(state, Mapping):
        raise TypeError(f"a checkpoint state must be a dict, got {type(state).__name__}")
    arrays: dict[str, np.ndarray] = {}
    plain: dict[str, Any] = {}
    np_scalars: list[str] = []
    for key, value in state.items():
        if not isinstance(key, str) or key in (_JSON_MEMBER, _SCALAR_MEMBER):
            raise TypeError(f"checkpoint state key {key!r} must be a string other than {_JSON_MEMBER!r}")
        if value is None or isinstance(value, (bool, int, float, str, list, dict)):
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"checkpoint state[{key!r}] is not JSON-serializable: {exc}") from None
            plain[key] = value
            continue
        arr = np.asarray(value)  # numpy arrays and scalars, JAX arrays
        if arr.dtype.hasobject:
            raise TypeError(
                f"checkpoint state[{key!r}] has dtype object ({type(value).__name__}); "
                "allowed: numeric/bool/str arrays and JSON-able Python values"
            )
        arrays[key] = arr
        if isinstance(value, np.generic):
            np_scalars.append(key)
    arrays[_JSON_MEMBER] = np.frombuffer(json.dumps(plain).encode(), dtype=np.uint8)
    arrays[_SCALAR_MEMBER] = np.array(np_scalars, dtype=str) if np_scalars else np.zeros(0, dtype="<U1")
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    payload = buf.getvalue()
    header = {
        "format": 2,
        "fingerprint": fingerprint,
        "seq": int(seq),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    header["header_sha256"] = _header_digest(header)
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def _header_digest(header: Mapping[str, Any]) -> str:
    """SHA-256 of the header's other fields (canonical JSON): a flipped byte in the header --
    in the fingerprint, say -- makes the checkpoint *damaged* (skipped, the previous good one
    is used), never "a different problem"."""
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def namespace(fingerprint: str) -> str:
    """The directory (under a store's URI) that holds one problem's checkpoints."""
    return "p-" + hashlib.sha256(str(fingerprint).encode()).hexdigest()[:20]


def decode_state(blob: bytes) -> tuple[dict[str, Any], State]:
    """``(header, state)`` of a checkpoint; :class:`CorruptCheckpointError` if it is damaged."""
    if not blob.startswith(MAGIC):
        raise CorruptCheckpointError("bad magic (not a checkpoint, or damaged at the start)")
    end = blob.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise CorruptCheckpointError("no header line")
    try:
        header = json.loads(blob[len(MAGIC) : end])
        size, digest = int(header["size"]), str(header["sha256"])
        str(header["fingerprint"])
        fmt = int(header.get("format", 1))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptCheckpointError(f"unreadable header ({type(exc).__name__})") from None
    if fmt >= 2 and header.get("header_sha256") != _header_digest(header):
        raise CorruptCheckpointError("header checksum mismatch (the header was damaged)")
    payload = blob[end + 1 :]
    if len(payload) != size:
        raise CorruptCheckpointError(f"truncated or padded: payload has {len(payload)} bytes, header says {size}")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptCheckpointError("checksum mismatch (the payload was damaged)")
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    plain = json.loads(arrays.pop(_JSON_MEMBER).tobytes().decode())
    np_scalars = set(arrays.pop(_SCALAR_MEMBER).tolist())
    state: State = {k: (v[()] if k in np_scalars else v) for k, v in arrays.items()}
    state.update(plain)
    return header, state


class CheckpointStore:
    """Atomic, checksummed checkpoints at a directory URI (local, ``memory://``, ``s3://``...).

    Parameters
    ----------
    uri: the directory; None uses ``nlsq_tasks.workflow.create_checkpoint_directory()``.
    storage_options: passed to fsspec (credentials are never shown in reprs or errors).
    keep_last: how many checkpoints to keep (>= 1); older ones are deleted after each save.
    """

    def __init__(self, uri=None, storage_options: Mapping[str, Any] | None = None, keep_last: int = 3):
        if uri is None:
            from nlsq_tasks.workflow import create_checkpoint_directory  # lazy: workflow stays I/O free

            uri = str(create_checkpoint_directory())
        if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1:
            raise ValueError(f"keep_last={keep_last!r} must be an integer >= 1")
        self.uri = to_uri(uri).rstrip("/")
        self.storage_options = dict(storage_options) if storage_options else None
        self.keep_last = keep_last
        self._fs, self._root = resolve(self.uri, self.storage_options)
        self._root = self._root.rstrip("/")

    def __repr__(self) -> str:
        return f"CheckpointStore({scrub(self.uri)!r}, storage_options={redact_options(self.storage_options)!r}, keep_last={self.keep_last})"

    def child(self, name: str) -> "CheckpointStore":
        """A store for a sub-problem (e.g. one multi-start refinement) at ``<uri>/<name>``."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"child name {name!r} must be a plain, non-empty directory name")
        if name.startswith("p-"):
            raise ValueError(f"child name {name!r} must not start with 'p-' (reserved for problem namespaces)")
        return CheckpointStore(join(self.uri, name), self.storage_options, keep_last=self.keep_last)

    # -- listing --------------------------------------------------------------------------
    def _dir(self, fingerprint: str | None) -> str:
        """The directory of one problem's checkpoints (None: the store's root, where
        checkpoints written before namespacing live)."""
        return self._root if fingerprint is None else f"{self._root}/{namespace(fingerprint)}"

    def _names(self, directory: str) -> list[tuple[int, str]]:
        """``(seq, name)`` of the committed checkpoints in ``directory``, oldest first."""
        fs = self._fs
        fs.invalidate_cache(directory)  # another process may have written since we last listed
        try:
            entries = fs.ls(directory, detail=False)
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            name = e.rstrip("/").rsplit("/", 1)[-1]
            m = _NAME.match(name)
            if m and not is_temporary(name):
                out.append((int(m.group(1)), name))
        return sorted(out)

    def _namespaces(self) -> list[str]:
        try:
            entries = self._fs.ls(self._root, detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries
                      if e.get("type") == "directory" and e["name"].rstrip("/").rsplit("/", 1)[-1].startswith("p-"))

    def list(self, fingerprint: str | None = None) -> list[str]:
        """URIs of the stored checkpoints of one problem (all problems when None), oldest
        first within a problem (validity not checked)."""
        with storage_errors(self.uri, "list checkpoints in", self.storage_options):
            if fingerprint is not None:
                ns = namespace(fingerprint)
                return [join(self.uri, f"{ns}/{n}") for _, n in self._names(self._dir(fingerprint))]
            out = [join(self.uri, n) for _, n in self._names(self._root)]
            for ns in self._namespaces():
                out += [join(self.uri, f"{ns}/{n}") for _, n in self._names(f"{self._root}/{ns}")]
            return out

    # -- CheckpointSink -------------------------------------------------------------------
    def save(self, state: State, *, fingerprint: str) -> str:
        """Write ``state`` as a new checkpoint; returns its URI. Earlier ones stay intact
        until this one is complete; then all but the newest ``keep_last`` are deleted."""
        fingerprint = str(fingerprint)
        blob = encode_state(state, fingerprint=fingerprint, seq=0)  # serialization errors raise before any write
        del blob
        return with_retries(lambda: self._save(state, fingerprint), self.uri, "write a checkpoint to",
                            self.storage_options)

    def _save(self, state: State, fingerprint: str) -> str:
        directory = self._dir(fingerprint)
        rel = namespace(fingerprint)
        names = self._names(directory)
        seq = (names[-1][0] + 1) if names else 1
        blob = encode_state(state, fingerprint=fingerprint, seq=seq)  # raises before any write
        name = f"ckpt-{seq:010d}-{uuid.uuid4().hex[:8]}.nlsqckpt"
        if not is_object_store(self._fs):
            self._fs.makedirs(directory, exist_ok=True)  # on S3 this would create a missing bucket
        write_bytes_atomic(self._fs, f"{directory}/{name}", blob)
        pointer = {"latest": name, "seq": seq, "fingerprint": fingerprint, "size": len(blob)}
        write_bytes_atomic(self._fs, f"{directory}/latest.json", json.dumps(pointer).encode())
        self._rotate(directory, name)
        return join(self.uri, f"{rel}/{name}")

    def _rotate(self, directory: str, newest: str) -> None:
        names = [n for _, n in self._names(directory)]
        if newest not in names:  # never delete anything unless the new one is visibly in place
            return
        for old in names[: max(0, len(names) - self.keep_last)]:
            if old != newest:
                try:
                    self._fs.rm_file(f"{directory}/{old}")
                except FileNotFoundError:
                    pass

    def _newest_valid(self, directory: str, rel: str):
        """``(header, state, uri)`` of the newest valid checkpoint in ``directory``, or None."""
        for _, name in reversed(self._names(directory)):
            uri = scrub(join(self.uri, f"{rel}/{name}" if rel else name))
            try:
                header, state = decode_state(self._fs.cat_file(f"{directory}/{name}"))
            except FileNotFoundError:  # rotated away by a concurrent save
                continue
            except (CorruptCheckpointError, ValueError, OSError, EOFError) as exc:
                log.warning("skipping damaged checkpoint %s: %s", uri, exc)
                continue
            return header, state, uri
        return None

    def load_latest(self, fingerprint: str) -> State | None:
        """The newest valid state of this problem, None when there is none (see the module notes).

        Other problems' checkpoints live in other namespaces and are never read or deleted.
        A checkpoint written before namespacing (at the root) is used when it is this
        problem's; one of another problem raises :class:`CheckpointMismatchError`."""
        fingerprint = str(fingerprint)

        def load():
            found = self._newest_valid(self._dir(fingerprint), namespace(fingerprint))
            if found is None:
                found = self._newest_valid(self._root, "")
                if found is not None and found[0]["fingerprint"] != fingerprint:
                    raise CheckpointMismatchError(fingerprint, found[0]["fingerprint"], found[2])
            return found

        found = with_retries(load, self.uri, "read checkpoints from", self.storage_options)
        return None if found is None else found[1]

    def describe_latest(self) -> dict[str, Any] | None:
        """Header of the newest valid checkpoint of any problem (fingerprint, seq, created,
        size, uri), or None."""
        with storage_errors(self.uri, "read checkpoints from", self.storage_options):
            best = None
            for rel in [""] + self._namespaces():
                found = self._newest_valid(f"{self._root}/{rel}" if rel else self._root, rel)
                if found is not None and (best is None or str(found[0].get("created")) > str(best.get("created"))):
                    best = {**found[0], "uri": found[2]}
        return best
