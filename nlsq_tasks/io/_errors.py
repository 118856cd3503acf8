"""Storage errors that say what went wrong, never with whom.

Every call into fsspec goes through :func:`storage_errors`, which turns the zoo of backend
exceptions (``OSError`` subclasses from s3fs, botocore's connection errors, aiohttp's,
timeouts) into three kinds a caller can act on:

* :class:`TransientStorageError` -- the network or the service hiccupped; retrying the same
  call may succeed (Prefect tasks list it in ``retry_condition_fn``/``retry_on``).
* :class:`StorageNotFoundError` / :class:`StoragePermissionError` -- a missing bucket, key or
  directory, or credentials that are wrong; retrying will not help.
* :class:`StorageError` -- anything else the storage layer refused.

Messages and reprs are scrubbed: any string value of a credential-like key in
``storage_options`` (``key``, ``secret``, ``token``, ``password``... at any depth) is
replaced by ``***`` before it can reach a log, a Prefect UI or a traceback. The backend
exception is therefore not chained (``raise ... from None``): its text is repeated,
scrubbed, in ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from typing import Any, Iterator, Mapping

_SECRET_KEY = re.compile(r"(key|secret|token|password|passwd|credential|signature)", re.IGNORECASE)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


class StorageError(OSError):
    """The storage layer refused an operation (the message names the URI and the reason)."""


class TransientStorageError(StorageError):
    """A network or service hiccup (connection refused or reset, timeout, throttling).

    Retrying the same operation may succeed; Prefect tasks retry on this class only."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """A bucket, directory or object does not exist."""


class StoragePermissionError(StorageError, PermissionError):
    """The credentials were refused or do not allow the operation."""


def _secret_values(options: Any) -> list[str]:
    """String values of credential-like keys, at any nesting depth (bounded by the data)."""
    out: list[str] = []
    if isinstance(options, Mapping):
        for k, v in options.items():
            if isinstance(v, str) and _SECRET_KEY.search(str(k)) and len(v) >= 3:
                out.append(v)
            elif isinstance(v, (Mapping, list, tuple)):
                out.extend(_secret_values(v))
    elif isinstance(options, (list, tuple)):
        for v in options:
            out.extend(_secret_values(v))
    return out


def redact_options(options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``storage_options`` safe to print: credential-like values become ``***``."""
    if options is None:
        return None

    def red(obj: Any, key: str = "") -> Any:
        if isinstance(obj, Mapping):
            return {k: red(v, str(k)) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(red(v, key) for v in obj)
        if isinstance(obj, str) and _SECRET_KEY.search(key):
            return "***"
        return obj

    return red(options)


def scrub(text: str, options: Mapping[str, Any] | None = None) -> str:
    """Remove credentials from ``text``: secret option values and ``user:pass@`` in URLs."""
    # Longest first, so that a secret containing another secret is removed whole.
    for secret in sorted(_secret_values(options or {}), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _USERINFO.sub(r"\g<scheme>***@", text)


def redact_uri(uri: str) -> str:
    """``uri`` with any ``user:password@`` part replaced by ``***@``."""
    return _USERINFO.sub(r"\g<scheme>***@", str(uri))


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, asyncio.TimeoutError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    # botocore / aiohttp / fsspec classes, matched by name so that this module does not
    # import optional backends just to classify their errors.
    transient = {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectionError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "FSTimeoutError",
        "HTTPClientError",
    }
    if names & transient:
        return True
    text = str(exc)
    if any(s in text for s in ("SlowDown", "Please reduce your request rate", "ServiceUnavailable", "RequestTimeout",
                               "Throttl", "TooManyRequests", "InternalError", "Service Unavailable", "Bad Gateway",
                               "Gateway Timeout", "Internal Server Error")):
        return True
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    if status is None:  # botocore ClientError
        status = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") \
            if isinstance(getattr(exc, "response", None), dict) else None
    return isinstance(status, int) and (status >= 500 or status == 429)


def _transient_in_chain(exc: BaseException) -> bool:
    """A transient fault, or one hidden behind another error: fsspec's HTTP backend reports a
    refused connection as FileNotFoundError raised *from* the connection error."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 16:  # bounded walk down __cause__/__context__
        if _is_transient(cur):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def classify(exc: BaseException, uri: str, action: str, options: Mapping[str, Any] | None) -> StorageError:
    """The :class:`StorageError` subclass (with a scrubbed message) that stands for ``exc``."""
    uri_s = scrub(str(uri), options)
    detail = scrub(f"{type(exc).__name__}: {exc}", options)
    if _transient_in_chain(exc):
        cause = exc.__cause__ or exc.__context__
        if cause is not None and not _is_transient(exc):
            detail = scrub(f"{type(cause).__name__}: {cause}", options)
        return TransientStorageError(f"could not {action} {uri_s}: transient storage error ({detail}); retrying may help")
    if isinstance(exc, FileNotFoundError):
        if "bucket does not exist" in str(exc) or "NoSuchBucket" in str(exc):
            bucket = uri_s.split("://", 1)[-1].split("/", 1)[0]
            return StorageNotFoundError(f"could not {action} {uri_s}: the bucket '{bucket}' does not exist ({detail})")
        return StorageNotFoundError(f"could not {action} {uri_s}: not found ({detail})")
    if isinstance(exc, PermissionError):
        return StoragePermissionError(
            f"could not {action} {uri_s}: access denied ({detail}); check the credentials in "
            "storage_options or the environment and the permissions on that location"
        )
    if isinstance(exc, ImportError):
        return StorageError(f"could not {action} {uri_s}: a storage backend is not installed ({detail})")
    return StorageError(f"could not {action} {uri_s}: {detail}")


@contextlib.contextmanager
def storage_errors(uri: str, action: str, options: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Translate backend exceptions raised inside the block into :class:`StorageError`.

    Our own errors (``StorageError``, ``ValueError`` about the data) pass through unchanged."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise classify(exc, uri, action, options) from None
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        # s3fs hands storage_options to its session only when it first connects
        raise StorageError(
            f"could not {action} {scrub(str(uri), options)}: storage_options rejected by the backend "
            f"({scrub(str(exc), options)})"
        ) from None
    except Exception as exc:  # backend-specific classes (botocore, aiohttp) not derived from OSError
        mod = type(exc).__module__.split(".")[0]
        if mod in ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "gcsfs", "adlfs", "urllib3", "requests"):
            raise classify(exc, uri, action, options) from None
        raise
