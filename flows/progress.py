"""Progress of a long fit: a Prefect progress artifact and, optionally, a terminal line.

The engine calls ``progress(event)`` with ``{"phase", "pass", "chunk", "n_chunks", "cost",
"nit"}`` once per chunk or pass. Updating an artifact is an API call, so updates are
throttled (at most one per ``min_interval`` seconds, plus the final one). The callback may
be invoked from a thread that is not the task's (a JAX host callback), so the Prefect
context of the task is captured when the reporter is built and entered for each update.

Progress is reported as a percentage of the *evaluation budget*: one pass is one
evaluation of the streaming solver, so ``100 * (pass - 1 + (chunk + 1) / n_chunks) / max_passes``
(capped at 99 until the fit ends). The in-memory (standard, chunked) solvers report each
iteration from inside their compiled loop, through a JAX host callback.
A fit that converges early jumps to 100 at the end; the description always says where it is.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import time
from typing import Any, Callable, Optional, TextIO

ProgressCallback = Callable[[dict], None]


class ProgressReporter:
    """Throttled progress: one Prefect progress artifact plus an optional terminal line."""

    def __init__(
        self,
        *,
        key: Optional[str] = "nlsq-fit-progress",
        max_passes: int = 100,
        min_interval: float = 0.5,
        artifact: bool = True,
        echo: Optional[TextIO] = None,
    ):
        self.key = key
        self.max_passes = max(int(max_passes), 1)
        self.min_interval = float(min_interval)
        self.echo = echo
        self.events = 0
        self.updates = 0
        self.last_event: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._last_update = 0.0
        self._artifact_id = None
        self._context = contextvars.copy_context()
        if artifact:
            self._artifact_id = self._in_context(self._create)

    # -- the callback -------------------------------------------------------------------
    def __call__(self, event: dict) -> None:
        with self._lock:
            self.events += 1
            self.last_event = dict(event)
            now = time.monotonic()
            if now - self._last_update < self.min_interval:
                return
            self._last_update = now
        self._publish(event)

    def finish(self, message: str = "done") -> None:
        """Set the artifact to 100% with a final description."""
        with self._lock:
            event = dict(self.last_event)
        if self._artifact_id is not None:
            self._in_context(self._update, 100.0, f"{message}; " + describe(event) if event else message)
        if self.echo is not None:
            print(f"  [{message}] " + describe(event), file=self.echo, flush=True)

    # -- internals ----------------------------------------------------------------------
    def percent(self, event: dict) -> float:
        passes = float(event.get("pass") or 0)
        chunk, n_chunks = event.get("chunk"), event.get("n_chunks")
        # chunks are numbered from 0: chunk j done means j + 1 of n_chunks read
        within = (float(chunk) + 1.0) / float(n_chunks) if chunk is not None and n_chunks else 1.0
        done = max(passes - 1.0, 0.0) + min(within, 1.0)
        return float(min(99.0, 100.0 * done / self.max_passes))

    def _publish(self, event: dict) -> None:
        text = describe(event)
        if self._artifact_id is not None:
            self._in_context(self._update, self.percent(event), text)
        if self.echo is not None:
            print("  " + text, file=self.echo, flush=True)
        self.updates += 1

    def _create(self):
        from prefect.artifacts import create_progress_artifact

        return create_progress_artifact(progress=0.0, key=self.key, description="Fit started")

    def _update(self, percent: float, description: str) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self._artifact_id, progress=percent, description=description)

    def _in_context(self, fn, *args):
        # A fresh copy each time: a Context can be entered by one thread at a time.
        try:
            return self._context.copy().run(fn, *args)
        except Exception as exc:  # progress must never fail a fit
            if self.echo is not None:
                print(f"  (progress artifact not updated: {type(exc).__name__}: {exc})", file=self.echo)
            return None


def describe(event: dict) -> str:
    """One compact line: ``streaming pass 3 chunk 12/40 cost=1.234e+02 nit=2``."""
    parts = [str(event.get("phase", "fit"))]
    if event.get("pass") is not None:
        parts.append(f"pass {event['pass']}")
    if event.get("chunk") is not None:
        n = event.get("n_chunks")
        parts.append(f"chunk {event['chunk']}/{n}" if n else f"chunk {event['chunk']}")
    cost = event.get("cost")
    if cost is not None:
        try:
            parts.append(f"cost={float(cost):.6g}")
        except (TypeError, ValueError):
            pass
    if event.get("nit") is not None:
        parts.append(f"nit={event['nit']}")
    return " ".join(parts)


def terminal_echo() -> Optional[TextIO]:
    """Where the CLI prints progress lines (stderr, so stdout stays the report)."""
    return sys.stderr
