"""Timeouts and retries for every storage call.

A stalled S3 endpoint used to hang a fit for as long as the endpoint stalled, and a refused
connection failed at once. Now each call into storage:

* has a **timeout** -- on S3 the botocore connect and read timeouts, on HTTP the aiohttp
  total timeout, both set from :attr:`RetryBudget.timeout_s` unless the caller's
  ``storage_options`` set them (see :func:`with_timeouts`); local files and ``memory://``
  cannot stall;
* is **retried** with exponential backoff (and jitter) when the fault is transient: a stall
  (timeout), a refused or reset connection, a 5xx answer, throttling -- whatever
  :mod:`nlsq_tasks.io._errors` classifies as :class:`TransientStorageError`;
* **fails at once** when the fault is permanent (missing object or bucket, denied access,
  a bad option): retrying would not help.

The budget (``retries``, ``timeout_s``) comes from the request (``storage_retries``,
``storage_timeout_s`` in the flows) through :func:`retry_budget`, a context manager that
sets it for the calls made inside it (a context variable: Prefect copies it into task
threads; chunk sources capture it when they are opened, for their read-ahead thread).
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, TypeVar

from ._errors import TransientStorageError, storage_errors

T = TypeVar("T")


@dataclass(frozen=True)
class RetryBudget:
    """How hard to try: ``retries`` more attempts after the first, each call limited to
    ``timeout_s``; waits of ``backoff_s * 2**k`` (at most ``max_backoff_s``), +-50 % jitter."""

    retries: int = 3
    timeout_s: float = 60.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def __post_init__(self):
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 100:
            raise ValueError(f"retries={self.retries!r} must be an integer from 0 to 100")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) < 1e6:
                raise ValueError(f"{name}={v!r} must be a positive number of seconds")


_BUDGET: contextvars.ContextVar[RetryBudget] = contextvars.ContextVar("nlsq_storage_budget", default=RetryBudget())


def current_budget() -> RetryBudget:
    return _BUDGET.get()


@contextlib.contextmanager
def retry_budget(retries: Optional[int] = None, timeout_s: Optional[float] = None, **more) -> Iterator[RetryBudget]:
    """Use this budget for the storage calls made inside the block."""
    base = current_budget()
    budget = RetryBudget(
        retries=base.retries if retries is None else int(retries),
        timeout_s=base.timeout_s if timeout_s is None else float(timeout_s),
        backoff_s=more.get("backoff_s", base.backoff_s),
        max_backoff_s=more.get("max_backoff_s", base.max_backoff_s),
    )
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def with_retries(call: Callable[[], T], uri: str, action: str, options: Mapping[str, Any] | None = None,
                 budget: Optional[RetryBudget] = None) -> T:
    """``call()`` with backend errors classified, retried while they are transient."""
    budget = budget or current_budget()
    t0 = time.monotonic()
    for attempt in range(budget.retries + 1):
        try:
            with storage_errors(uri, action, options):
                return call()
        except TransientStorageError as exc:
            if attempt >= budget.retries:
                raise TransientStorageError(
                    f"{exc} -- gave up after {attempt + 1} attempt(s) in {time.monotonic() - t0:.1f} s "
                    f"(storage_retries={budget.retries}, storage_timeout_s={budget.timeout_s:g})"
                ) from None
            wait = min(budget.max_backoff_s, budget.backoff_s * 2**attempt)
            time.sleep(wait * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")  # the loop returns or raises


def with_timeouts(protocol: str, options: Mapping[str, Any] | None, budget: Optional[RetryBudget] = None) -> dict:
    """``storage_options`` with this budget's timeouts for ``protocol`` added where the
    caller set none (the caller's own settings always win)."""
    budget = budget or current_budget()
    out = dict(options or {})
    t = float(budget.timeout_s)
    if protocol in ("s3", "s3a"):
        config = dict(out.get("config_kwargs") or {})
        config.setdefault("connect_timeout", t)
        config.setdefault("read_timeout", t)
        # our own retries (with backoff) replace botocore's, so that attempts are counted once
        config.setdefault("retries", {"max_attempts": 1, "mode": "standard"})
        out["config_kwargs"] = config
    elif protocol in ("http", "https"):
        client = dict(out.get("client_kwargs") or {})
        if "timeout" not in client:
            import aiohttp

            client["timeout"] = aiohttp.ClientTimeout(total=t, sock_connect=t, sock_read=t)
        out["client_kwargs"] = client
    return out
