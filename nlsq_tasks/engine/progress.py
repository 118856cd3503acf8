"""The one progress event every solver emits and every listener reads.

A ``progress`` callback receives a :class:`ProgressEvent`. It is a frozen record with
attributes (``event.phase``, ``event.pass_index``...) and, so that a plain callback written
against dicts keeps working, a read-only mapping with the keys ``"phase"``, ``"pass"``,
``"chunk"``, ``"n_chunks"``, ``"cost"`` and ``"nit"`` (``dict(event)`` is the plain dict).

Phases:

- ``"start"``: before the first pass (in-memory strategies, framed by the front door);
- ``"pass"``: one chunk of a streaming pass read, or one iteration of the compiled
  in-memory loop (then ``chunk`` is the last chunk: the whole pass is done);
- ``"pass_end"``: a streaming pass finished (its trust-region update is applied);
- ``"done"``: the fit ended.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Iterator

PHASES = ("start", "pass", "pass_end", "done")
KEYS = ("phase", "pass", "chunk", "n_chunks", "cost", "nit")


@dataclass(frozen=True)
class ProgressEvent(Mapping):
    """Where a fit is: pass ``pass_index`` (1-based; 0 before the first), chunk ``chunk``
    (0-based) of ``n_chunks``, the current ``cost`` and ``nit`` accepted iterations."""

    phase: str
    pass_index: int
    chunk: int
    n_chunks: int
    cost: float = math.nan
    nit: int = 0

    def __getitem__(self, key: str):
        if key == "pass":
            return self.pass_index
        if key in KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(KEYS)

    def __len__(self) -> int:
        return len(KEYS)

    def as_dict(self) -> dict:
        return dict(self)

    @classmethod
    def coerce(cls, event) -> "ProgressEvent":
        """An event from a ProgressEvent or a dict with the mapping's keys."""
        if isinstance(event, cls):
            return event
        return cls(phase=str(event.get("phase", "pass")), pass_index=int(event.get("pass") or 0),
                   chunk=int(event.get("chunk") or 0), n_chunks=int(event.get("n_chunks") or 1),
                   cost=float(event.get("cost", math.nan)), nit=int(event.get("nit") or 0))


ProgressCallback = Callable[[ProgressEvent], None]
