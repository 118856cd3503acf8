"""Progress of a fit: a Prefect progress artifact, and a progress bar on a terminal.

The engine calls ``progress(event)`` with ``{"phase", "pass", "chunk", "n_chunks", "cost",
"nit"}`` (a dict, or an object with those attributes): per chunk for streaming fits, per
iteration for in-memory ones (where ``pass`` counts function evaluations).

Honesty rules, because a progress bar that runs backwards or jumps teaches users to
ignore it:

- the fraction is of a *known bound*: the most passes a streaming fit may make
  (``max_passes``, plus pass 0 that evaluates the start), or the most evaluations an
  in-memory fit may make (``max_nfev``); a fit that converges early jumps to 100 % when
  it ends, and the text says so ("converged after 7 of at most 300");
- it never goes down: multi-start refinements restart their pass count, and are counted
  as segments of the whole;
- the text names the unit once ("pass 3 of at most 51, chunk 12/40, cost 1.234e+02"; passes
  are counted from 1, the first being the evaluation of the starting point),
  and leaves out a cost that is not known yet.

Updating an artifact is an API call, so updates are throttled (at most one per
``min_interval`` seconds, plus the final one). The callback may be invoked from a thread
that is not the task's (a JAX host callback), so the Prefect context of the task is
captured when the reporter is built and entered for each update.

:class:`TerminalProgressBar` is the terminal side, reusable by any command (``nlsq-flow
run`` by pass or iteration, ``nlsq-flow batch`` by data set): it draws only on a TTY, and
adds the time per step and an estimate of the time left once a run has lasted a few seconds.
"""

from __future__ import annotations

import contextvars
import math
import os
import sys
import threading
import time
from typing import Any, Callable, Optional, TextIO

ProgressCallback = Callable[[Any], None]

# Show time per step and the time left only for runs long enough to need them.
LONG_RUN_S = 3.0


def event_dict(event: Any) -> dict[str, Any]:
    """An event as a dict, whether the engine sent a dict or an event object."""
    if isinstance(event, dict):
        return dict(event)
    if hasattr(event, "_asdict"):
        return dict(event._asdict())
    try:
        import dataclasses

        if dataclasses.is_dataclass(event):
            return dataclasses.asdict(event)
    except Exception:
        pass
    return {k: getattr(event, k) for k in ("phase", "pass", "pass_index", "chunk", "n_chunks", "cost", "nit", "nfev")
            if hasattr(event, k)}


def _finite(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class ProgressMeter:
    """Turns engine events into an honest, monotone fraction and one line of text.

    ``unit`` is ``"pass"`` (streaming: ``limit`` = most passes, counting pass 0) or
    ``"evaluation"`` (in memory: ``limit`` = ``max_nfev``). ``segments`` > 1 when several
    runs of the same bound follow each other (multi-start refinements).
    """

    def __init__(self, unit: str, limit: int, segments: int = 1):
        self.unit = unit
        self.limit = max(int(limit), 1)
        self.segments = max(int(segments), 1)
        self.segment = 0
        self._last_step = -1.0
        self.fraction = 0.0
        self.text = "starting"

    def step_of(self, e: dict) -> float:
        """Steps done in the current segment (a streaming pass counts by its chunks)."""
        if self.unit == "pass":
            passes = float(e.get("pass", e.get("pass_index")) or 0)
            chunk, n_chunks = e.get("chunk"), e.get("n_chunks")
            if e.get("phase") == "pass_end" or chunk is None or not n_chunks:
                return passes + 1.0
            return passes + min((float(chunk) + 1.0) / float(n_chunks), 1.0)
        return float(e.get("pass", e.get("nfev")) or 0)

    def update(self, event: Any) -> float:
        e = event_dict(event)
        step = self.step_of(e)
        if step + 1e-9 < self._last_step and self.segment + 1 < self.segments:
            self.segment += 1  # a new refinement started its own count
        self._last_step = step
        whole = (self.segment + min(step / self.limit, 1.0)) / self.segments
        self.fraction = max(self.fraction, min(whole, 0.99))
        self.text = self.describe(e)
        return self.fraction

    def describe(self, e: dict) -> str:
        parts = []
        if self.segments > 1:
            parts.append(f"refinement {self.segment + 1} of {self.segments}:")
        if self.unit == "pass":
            p = int(e.get("pass", e.get("pass_index")) or 0)  # the engine counts from pass 0
            parts.append(f"pass {p + 1} of at most {self.limit}")
            if e.get("chunk") is not None and e.get("n_chunks") and e.get("phase") != "pass_end":
                parts.append(f"chunk {int(e['chunk']) + 1}/{int(e['n_chunks'])}")
        else:
            parts.append(f"iteration {int(e.get('nit') or 0)}, evaluation {int(e.get('pass', e.get('nfev')) or 0)} "
                         f"of at most {self.limit}")
        cost = _finite(e.get("cost"))
        if cost is not None:
            parts.append(f"cost {cost:.6g}")
        return ", ".join(parts).replace(":,", ":")

    def finish_text(self, status: str, event: Optional[dict]) -> str:
        e = event or {}
        if self.unit == "pass":
            done = int(e.get("pass", e.get("pass_index")) or 0) + 1
            what = f"{done} pass{'es' if done != 1 else ''} of at most {self.limit}"
        else:
            done = int(e.get("pass", e.get("nfev")) or 0)
            what = f"{done} evaluations of at most {self.limit}"
        cost = _finite(e.get("cost"))
        return f"{status} after {what}" + (f", cost {cost:.6g}" if cost is not None else "")


def limits_from_plan(plan: dict, n_params: int, max_nfev: Optional[int] = None) -> tuple[str, int, int]:
    """(unit, limit, segments) for a fit of this plan, from what the plan knows."""
    evaluations = int(max_nfev) if max_nfev else 100 * max(int(n_params), 1)
    n_starts = int(plan.get("n_starts") or 1)
    if plan.get("strategy") == "streaming":
        config = plan.get("config") or {}
        passes = min(int(config.get("max_passes") or 100), evaluations + 1)
        return "pass", passes + 1, (min(n_starts, 3) if n_starts > 1 else 1)
    return "evaluation", evaluations, 1


class ProgressReporter:
    """Throttled progress: one Prefect progress artifact and/or a terminal bar."""

    def __init__(
        self,
        *,
        unit: str = "pass",
        limit: int = 100,
        segments: int = 1,
        key: Optional[str] = None,
        min_interval: float = 0.5,
        artifact: bool = True,
        bar: Optional["TerminalProgressBar"] = None,
        max_passes: Optional[int] = None,  # older keyword: a streaming bound
    ):
        if max_passes is not None:
            unit, limit = "pass", int(max_passes) + 1
        self.meter = ProgressMeter(unit, limit, segments)
        self.key = key
        self.min_interval = float(min_interval)
        self.bar = bar
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
    def __call__(self, event: Any) -> None:
        with self._lock:
            self.events += 1
            self.last_event = event_dict(event)
            fraction = self.meter.update(self.last_event)
            text = self.meter.text
            if self.bar is not None:
                self.bar.update(fraction, text, step=self.meter.step_of(self.last_event))
            now = time.monotonic()
            if now - self._last_update < self.min_interval:
                return
            self._last_update = now
        self._publish(fraction, text)

    def percent(self, event: Any) -> float:
        """The percentage this event would show (the meter's fraction never goes down)."""
        return 100.0 * self.meter.update(event)

    def finish(self, status: str = "done") -> None:
        """Set the artifact to 100 % with a final description; close the bar."""
        with self._lock:
            text = self.meter.finish_text(status, self.last_event)
        if self._artifact_id is not None:
            self._in_context(self._update, 100.0, text)
        if self.bar is not None:
            self.bar.close(text)

    # -- internals ----------------------------------------------------------------------
    def _publish(self, fraction: float, text: str) -> None:
        if self._artifact_id is not None:
            self._in_context(self._update, 100.0 * fraction, text)
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
        except Exception:  # progress must never fail a fit
            return None


def describe(event: Any) -> str:
    """One compact line for an event without a known bound: ``pass 3, chunk 12/40, cost 1.234e+02``."""
    e = event_dict(event)
    parts = []
    if e.get("pass") is not None:
        parts.append(f"pass {e['pass']}")
    if e.get("chunk") is not None:
        n = e.get("n_chunks")
        parts.append(f"chunk {int(e['chunk']) + 1}/{n}" if n else f"chunk {e['chunk']}")
    cost = _finite(e.get("cost"))
    if cost is not None:
        parts.append(f"cost {cost:.6g}")
    if e.get("nit") is not None:
        parts.append(f"iteration {e['nit']}")
    return ", ".join(parts) or str(e.get("phase", "fit"))


# -- terminal -----------------------------------------------------------------------------------
class TerminalProgressBar:
    """A one-line progress bar on a terminal, redrawn in place; silent when not a TTY.

    ``update(fraction, text, step=None)``: ``step`` (passes, iterations, data sets done) lets
    the bar show the time per step and the time left once the run has lasted
    :data:`LONG_RUN_S`. Reusable: ``nlsq-flow batch`` drives one by data set.
    """

    def __init__(self, unit: str = "step", stream: Optional[TextIO] = None, width: int = 28,
                 min_interval: float = 0.1, force: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or _is_tty(self.stream)
        self.unit = unit
        self.width = width
        self.min_interval = min_interval
        self.t0 = time.monotonic()
        self._last_draw = 0.0
        self._last_len = 0
        self._first_step: Optional[tuple[float, float]] = None

    def update(self, fraction: float, text: str = "", step: Optional[float] = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if step is not None and self._first_step is None and step > 0:
            self._first_step = (now, float(step))
        if now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        self._draw(self.line(fraction, text, step, now))

    def line(self, fraction: float, text: str, step: Optional[float] = None, now: Optional[float] = None) -> str:
        now = time.monotonic() if now is None else now
        fraction = min(max(float(fraction), 0.0), 1.0)
        filled = int(round(fraction * self.width))
        out = f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * fraction:5.1f}% {text}"
        elapsed = now - self.t0
        if elapsed >= LONG_RUN_S and step is not None and self._first_step is not None:
            t_first, s_first = self._first_step
            done = float(step) - s_first
            if done > 0 and now > t_first:
                per = (now - t_first) / done
                out += f" | {_duration(per)}/{self.unit}"
                if fraction > 0:
                    out += f", about {_duration(elapsed * (1 - fraction) / fraction)} left at most"
        return out

    def close(self, text: str = "") -> None:
        if not self.enabled:
            return
        line = self.line(1.0, text) + f" ({_duration(time.monotonic() - self.t0)})"
        self._draw(line)
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self, line: str) -> None:
        pad = max(self._last_len - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last_len = len(line)


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def terminal_bar_wanted() -> bool:
    """The CLI asks for a bar (``NLSQ_FLOW_PROGRESS_BAR=1``) and stderr is a terminal."""
    return os.environ.get("NLSQ_FLOW_PROGRESS_BAR") == "1" and _is_tty(sys.stderr)
