"""Checkpoint contract between the engine (pure) and storage (``nlsq_tasks.io``).

The engine describes its progress as a *state*: a flat dict of numpy arrays and
Python scalars (parameters, radius, iteration, partial sums and cursor within a pass,
RNG state...). It never writes files; it hands the state to a :class:`CheckpointSink`.
``nlsq_tasks.io.CheckpointStore`` is the fsspec implementation (atomic, checksummed);
:class:`MemoryCheckpointSink` keeps states in a list, for tests and notebooks.

Every state is saved together with the problem's *fingerprint* (model, data identity
and size, preset). Loading a checkpoint whose fingerprint differs raises
:class:`CheckpointMismatchError`, so a run never silently resumes someone else's fit.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable

State = dict[str, Any]


class CheckpointError(RuntimeError):
    """A checkpoint could not be used."""


class CheckpointMismatchError(CheckpointError):
    """The latest valid checkpoint belongs to a different problem."""

    def __init__(self, expected: str, found: str, where: str = ""):
        self.expected, self.found, self.where = expected, found, where
        super().__init__(
            f"checkpoint{(' at ' + where) if where else ''} belongs to a different problem "
            f"(fingerprint {found[:16]}..., this fit is {expected[:16]}...). "
            "To start afresh: resume='never' in fit_source, --no-resume on the nlsq-flow CLI, resume: false in a "
            "flow request -- or use another checkpoint location (the other problem's checkpoints stay intact)."
        )


@runtime_checkable
class CheckpointSink(Protocol):
    def save(self, state: State, *, fingerprint: str) -> None:
        """Persist ``state`` atomically. A failure must leave earlier checkpoints intact."""
        ...

    def load_latest(self, fingerprint: str) -> State | None:
        """The newest valid state, or None when there is none.

        Corrupt or truncated checkpoints are skipped (the previous good one is used).
        Raises CheckpointMismatchError when the newest valid one has another fingerprint.
        """
        ...

    # Optional: ``child(name) -> CheckpointSink``, a separate location for a sub-problem
    # (multi-start streaming refinements use it; without it they run un-checkpointed).


class MemoryCheckpointSink:
    """Keeps states in memory (copies), newest last."""

    def __init__(self, keep_last: int = 3):
        self.keep_last = keep_last
        self.saved: list[tuple[str, State]] = []

    def save(self, state: State, *, fingerprint: str) -> None:
        import copy

        self.saved.append((fingerprint, copy.deepcopy(state)))
        del self.saved[: -self.keep_last]

    def load_latest(self, fingerprint: str) -> State | None:
        if not self.saved:
            return None
        fp, state = self.saved[-1]
        if fp != fingerprint:
            raise CheckpointMismatchError(fingerprint, fp, "memory")
        import copy

        return copy.deepcopy(state)

    def child(self, name: str) -> "MemoryCheckpointSink":
        """A separate sink for a sub-problem (e.g. one multi-start refinement), kept by name."""
        children = self.__dict__.setdefault("children", {})
        return children.setdefault(name, MemoryCheckpointSink(self.keep_last))


def problem_fingerprint(*parts: Any) -> str:
    """A stable hash of the parts that define a problem (model id, data id, n, preset...)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


class FreshStartSink:
    """A sink that saves but never resumes (``resume=False``): a run starts afresh and its
    checkpoints replace the old ones as it goes."""

    def __init__(self, sink):
        self.sink = sink

    def save(self, state: State, *, fingerprint: str) -> None:
        self.sink.save(state, fingerprint=fingerprint)

    def load_latest(self, fingerprint: str) -> State | None:
        return None

    def child(self, name: str) -> "FreshStartSink":
        return FreshStartSink(self.sink.child(name))
