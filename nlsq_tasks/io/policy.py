"""Where a request may read and write: the worker's storage policy.

A fit triggered from the Prefect UI or an API call runs on a shared worker, so the URIs in
a request (``data.uri``, a preset path, ``storage_uri``, a batch ``glob``) are checked
against settings that belong to the deployment or the worker, never to the request:

``NLSQ_STORAGE_PROTOCOLS``
    Comma-separated protocols a request may use. Default ``file,memory,s3``. ``http`` and
    ``https`` are never allowed by default; when listed they are read-only (data and presets,
    never results or checkpoints).
``NLSQ_STORAGE_ROOTS``
    Comma-separated places a request may use: local directories and URI prefixes
    (``/srv/data,s3://lab-bucket/nlsq``). Default: the working directory and
    ``NLSQ_STORAGE_ROOT``. A local path is allowed when its real path (symlinks and ``..``
    resolved) lies under a local root. A remote URI is allowed when it starts with a listed
    prefix of its protocol; a protocol with no listed prefix is allowed anywhere.
``NLSQ_STORAGE_ROOT``
    The configured storage root (where results go by default); always an allowed root when
    ``NLSQ_STORAGE_ROOTS`` is not set.

Credentials never belong in a URI: ``s3://user:secret@bucket`` is refused (the message
shows ``***`` in place of them); put them in ``storage_options`` or a Secret block.

:func:`check_uri` is the one check; it raises :class:`StoragePolicyError` naming the request
field, the value (credentials removed) and the setting that would allow it. Nothing is
read or written by a check. The library's own functions (``inspect_data``, ``open_source``)
are not restricted: the policy is for requests, which come from other people.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional

from ._errors import scrub

PROTOCOLS_SETTING = "NLSQ_STORAGE_PROTOCOLS"
ROOTS_SETTING = "NLSQ_STORAGE_ROOTS"
ROOT_SETTING = "NLSQ_STORAGE_ROOT"
DEFAULT_PROTOCOLS = ("file", "memory", "s3")
READ_ONLY_PROTOCOLS = frozenset({"http", "https"})
ROLES = ("data", "preset", "results")
_ALIASES = {"local": "file", "s3a": "s3"}
_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")
_USERINFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@")


class StoragePolicyError(ValueError):
    """A request URI the worker's storage policy does not allow; ``field``, ``value`` and
    ``setting`` name what was refused and which setting would allow it."""

    def __init__(self, field: str, value: str, message: str, setting: Optional[str] = None):
        self.field, self.value, self.setting = field, value, setting
        super().__init__(f"{field}={value!r}: {message}")


def has_credentials(uri: str) -> bool:
    """True when ``uri`` carries a ``user[:password]@`` part."""
    return bool(_USERINFO.match(uri or ""))


def uri_protocol(uri: str) -> str:
    """The protocol of ``uri`` as the policy names it (``file`` for plain paths)."""
    m = _SCHEME.match(uri)
    proto = m.group("scheme").lower() if m else "file"
    return _ALIASES.get(proto, proto)


@dataclass(frozen=True)
class StoragePolicy:
    """Allowed protocols and roots (see the module notes); ``from_env`` reads the settings."""

    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    roots: tuple[str, ...] = ()
    roots_setting_used: bool = False

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "StoragePolicy":
        env = os.environ if environ is None else environ
        protos = tuple(_ALIASES.get(p, p) for p in _split(env.get(PROTOCOLS_SETTING)) or DEFAULT_PROTOCOLS)
        listed = _split(env.get(ROOTS_SETTING))
        roots = listed or [os.getcwd()] + ([env[ROOT_SETTING]] if env.get(ROOT_SETTING) else [])
        return cls(tuple(p.lower() for p in protos), tuple(_normal_root(r) for r in roots), bool(listed))

    # -- the check ----------------------------------------------------------------------------
    def check(self, uri: str, role: str, field: str) -> str:
        """``uri`` when ``role`` (data, preset or results) may use it; else StoragePolicyError."""
        if role not in ROLES:
            raise ValueError(f"role={role!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(uri, str) or not uri.strip():
            raise StoragePolicyError(field, str(uri), "must be a non-empty path or URI")
        shown = scrub(uri)
        if has_credentials(uri):
            raise StoragePolicyError(
                field, shown, "credentials in a URI are refused (they would be stored with the run's parameters "
                "and logs); put them in storage_options or a Prefect Secret block (storage_options_block)")
        proto = uri_protocol(uri)
        if proto not in self.protocols:
            hint = " (http and https are read-only: data and presets only)" if proto in READ_ONLY_PROTOCOLS else ""
            raise StoragePolicyError(
                field, shown, f"protocol '{proto}' is not allowed on this worker (allowed: {', '.join(self.protocols)}); "
                f"the worker/deployment setting {PROTOCOLS_SETTING} lists the allowed protocols{hint}",
                PROTOCOLS_SETTING)
        if proto in READ_ONLY_PROTOCOLS and role == "results":
            raise StoragePolicyError(
                field, shown, f"'{proto}' storage is read-only; results and checkpoints need a writable protocol "
                f"({', '.join(p for p in self.protocols if p not in READ_ONLY_PROTOCOLS)})", PROTOCOLS_SETTING)
        if proto == "file":
            path = _local_path(uri)
            if not any(_under(path, r) for r in self.roots if uri_protocol(r) == "file"):
                raise StoragePolicyError(
                    field, shown, f"the path is outside the allowed storage roots ({self._roots_text('file')}); "
                    f"the worker/deployment setting {self._roots_name()} lists them", self._roots_name())
            return uri
        prefixes = [r for r in self.roots if uri_protocol(r) == proto]
        if prefixes and not any(_prefix_match(uri, p) for p in prefixes):
            raise StoragePolicyError(
                field, shown, f"the location is outside the allowed {proto} roots ({', '.join(prefixes)}); "
                f"the worker/deployment setting {ROOTS_SETTING} lists them", ROOTS_SETTING)
        return uri

    def _roots_text(self, proto: str) -> str:
        roots = [r for r in self.roots if uri_protocol(r) == proto]
        return ", ".join(roots) if roots else "none"

    def _roots_name(self) -> str:
        return ROOTS_SETTING if self.roots_setting_used else f"{ROOTS_SETTING} (default: the working directory and {ROOT_SETTING})"


def check_uri(uri: str, role: str, field: str, policy: Optional[StoragePolicy] = None) -> str:
    """Check one request URI against the worker's policy (read from the environment now)."""
    return (policy or StoragePolicy.from_env()).check(uri, role, field)


def check_glob(pattern: str, field: str = "data.glob", policy: Optional[StoragePolicy] = None) -> str:
    """Check a glob before it is listed: its fixed part (up to the first wildcard) must be
    an allowed place to read data from; each match is checked again with :func:`check_uri`."""
    policy = policy or StoragePolicy.from_env()
    fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    base = fixed.rsplit("/", 1)[0] if "/" in fixed else "."
    if _SCHEME.match(pattern) and not _SCHEME.match(base + "/"):
        base = fixed  # e.g. "s3://b*": the bucket itself is a pattern
    policy.check(pattern, "data", field)  # protocol and credentials
    policy.check(base or "/", "data", field)
    return pattern


# -- helpers ------------------------------------------------------------------------------------
def _split(text: Optional[str]) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _local_path(uri: str) -> str:
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    path = path[len("local://"):] if path.startswith("local://") else path
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _normal_root(root: str) -> str:
    return _local_path(root) if uri_protocol(root) == "file" else root.rstrip("/")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _prefix_match(uri: str, prefix: str) -> bool:
    norm = re.sub(r"/+", "/", uri.split("://", 1)[1]) if "://" in uri else uri
    pre = prefix.split("://", 1)[1] if "://" in prefix else prefix
    if ".." in norm.split("/"):
        return False
    return norm == pre or norm.startswith(pre.rstrip("/") + "/")
