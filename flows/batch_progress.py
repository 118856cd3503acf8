"""Progress of a batch run: a Prefect progress artifact and, on a terminal, a one-line bar.

A batch advances one batch task at a time, so progress is ``data sets done / data sets``:
honest, and cheap (one artifact update per finished batch, throttled). The bar is drawn on
stderr only when it is a TTY and the CLI asked for terminal progress
(``NLSQ_FLOW_ECHO_PROGRESS``); logs and pipes get no carriage returns.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO

BAR_WIDTH = 30


def bar_line(done: int, total: int, failed: int = 0, width: int = BAR_WIDTH) -> str:
    """``[#########.....]  450/1000 data sets (45%), 3 failed``."""
    total = max(int(total), 1)
    frac = min(max(done / total, 0.0), 1.0)
    filled = int(round(frac * width))
    tail = f", {failed} failed" if failed else ""
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total} data sets ({frac:.0%}){tail}"


def terminal_bar_stream() -> Optional[TextIO]:
    """stderr when the CLI asked for terminal progress and stderr is a terminal, else None."""
    if os.environ.get("NLSQ_FLOW_ECHO_PROGRESS") != "1":
        return None
    stream = sys.stderr
    return stream if hasattr(stream, "isatty") and stream.isatty() else None


class BatchProgress:
    """Counts finished data sets; updates the artifact (throttled) and the terminal bar."""

    def __init__(self, total: int, *, key: str = "nlsq-batch-progress", min_interval: float = 1.0,
                 stream: Optional[TextIO] = None, artifact: bool = True):
        self.total, self.done, self.failed = int(total), 0, 0
        self.min_interval = float(min_interval)
        self.stream = stream
        self._last = 0.0
        self._artifact_id = None
        if artifact:
            try:
                from prefect.artifacts import create_progress_artifact

                self._artifact_id = create_progress_artifact(progress=0.0, key=key,
                                                             description=f"0 of {self.total} data sets fitted")
            except Exception:  # progress must never fail a run
                self._artifact_id = None

    def advance(self, n: int, failed: int = 0) -> None:
        self.done += int(n)
        self.failed += int(failed)
        now = time.monotonic()
        final = self.done >= self.total
        if self.stream is not None:
            self.stream.write("\r" + bar_line(self.done, self.total, self.failed) + ("\n" if final else ""))
            self.stream.flush()
        if self._artifact_id is not None and (final or now - self._last >= self.min_interval):
            self._last = now
            try:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self._artifact_id, progress=100.0 * self.done / max(self.total, 1),
                                         description=f"{self.done} of {self.total} data sets done, {self.failed} failed")
            except Exception:
                pass
