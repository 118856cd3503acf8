"""The three strategies and the typed configurations of the two that chunk.

``Strategy`` is a ``str`` enum, so ``strategy == "streaming"`` holds and it serialises as
its plain value. Configurations are frozen dataclasses validated on construction: a
config that exists is a config the engine can run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

from ._checks import check_bool, check_int, check_str

from ..limits import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE  # noqa: F401  (re-exported)
from ..strategies import get_strategy, strategy_names


def _strategy_str(self) -> str:  # f"{strategy}" prints "chunked", not "Strategy.CHUNKED"
    return self.value


# One member per registered strategy (nlsq_tasks.strategies), in registration order:
# STANDARD (everything in memory, one Jacobian), CHUNKED (data in memory, Jacobian formed
# chunk by chunk), STREAMING (data read chunk by chunk from a source, one pass per iteration).
Strategy = Enum("Strategy", [(name.upper(), name) for name in strategy_names()], type=str, module=__name__)
Strategy.__str__ = _strategy_str
Strategy.__format__ = lambda self, spec: format(self.value, spec)
Strategy.__doc__ = "How the normal equations are accumulated: " + "; ".join(
    f"{name.upper()}: {get_strategy(name).summary}" for name in strategy_names()) + "."


@dataclass(frozen=True)
class ChunkedConfig:
    """Chunked strategy: the data are in memory, the Jacobian is formed ``chunk_size`` rows at a time.

    ``chunk_size`` is in [1e3, 1e6] points; ``n_chunks`` is ``ceil(n_points / chunk_size)``
    for the data set the config was made for (informative; the engine recounts).
    """

    chunk_size: int
    n_chunks: int = 1

    def __post_init__(self) -> None:
        check_int("chunk_size", self.chunk_size, minimum=MIN_CHUNK_SIZE, maximum=MAX_CHUNK_SIZE)
        check_int("n_chunks", self.n_chunks, minimum=1)

    def to_dict(self) -> dict:
        return {"kind": "chunked", **asdict(self)}


@dataclass(frozen=True)
class StreamingConfig:
    """Streaming strategy: one pass over a chunk source per trust-region iteration.

    - ``chunk_size``: points per chunk read, in [1e3, 1e6].
    - ``enable_checkpoints``, ``checkpoint_every_chunks``: save state every that many chunks
      (so a killed pass resumes mid-pass); ``checkpoint_dir`` is where (None: the caller decides).
    - ``warm_start``: first fit a subsample of ``warm_start_points`` points in memory and
      start streaming from its solution.
    - ``n_trial_radii``: trust-region radii evaluated in the same data pass (the radius
      schedule), so a rejected step does not cost a pass of its own.
    - ``adaptive_trials``: after a step accepted on its first try, evaluate only that first
      try in the next pass (1 trial point instead of ``n_trial_radii``); the iterates are the
      same, a rejection then costs one extra pass. On by default: a pass over local or
      page-cached data is compute-bound (measured at 1e8 points: 1.45 s instead of 3.42 s a
      pass, peak RSS 471 instead of 683 MB). Turn it off when every read is expensive (object
      stores over a slow link), where fewer passes matter more than compute per pass.
    - ``max_passes``: upper bound on data passes (each pass is one iteration).
    """

    chunk_size: int
    enable_checkpoints: bool = False
    checkpoint_every_chunks: int = 100
    checkpoint_dir: str | None = None
    warm_start: bool = True
    warm_start_points: int = 100_000
    n_trial_radii: int = 4
    adaptive_trials: bool = True
    max_passes: int = 100

    def __post_init__(self) -> None:
        check_int("chunk_size", self.chunk_size, minimum=MIN_CHUNK_SIZE, maximum=MAX_CHUNK_SIZE)
        check_bool("enable_checkpoints", self.enable_checkpoints)
        check_int("checkpoint_every_chunks", self.checkpoint_every_chunks, minimum=1)
        check_str("checkpoint_dir", self.checkpoint_dir, optional=True)
        check_bool("warm_start", self.warm_start)
        check_int("warm_start_points", self.warm_start_points, minimum=1)
        check_int("n_trial_radii", self.n_trial_radii, minimum=1, maximum=16)
        check_bool("adaptive_trials", self.adaptive_trials)
        check_int("max_passes", self.max_passes, minimum=1, maximum=10_000)

    def to_dict(self) -> dict:
        return {"kind": "streaming", **asdict(self)}
