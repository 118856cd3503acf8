"""The numerical engine: pure JAX (float64), no Prefect, no fsspec, no I/O.

>>> from nlsq_tasks.engine import run_standard, SolverOptions, FitResult

The strategies share one compiled trust-region loop and differ only in how the data
reaches it: ``run_standard`` (in memory, padded and tiled), ``run_chunked`` (in memory,
caller's blocks), ``run_streaming`` (a :class:`ChunkSource`, checkpointable) and
``run_multistart`` (many starts, batched or screened then refined).

Names are loaded on first use (PEP 562): ``import nlsq_tasks`` imports
``engine.result`` and ``engine.status`` only, which keeps ``nlsq_tasks.workflow`` light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> submodule that defines it
_EXPORTS = {
    "run_standard": "strategies",
    "run_chunked": "strategies",
    "run_streaming": "streaming",
    "run_multistart": "multistart",
    "validate_fit": "validation",
    "ValidationReport": "validation",
    "FitResult": "result",
    "FitStatus": "status",
    "SolverOptions": "options",
    "ArrayChunkSource": "sources",
    "Chunk": "sources",
    "ChunkSource": "sources",
    "CheckpointSink": "checkpoint",
    "MemoryCheckpointSink": "checkpoint",
    "CheckpointMismatchError": "checkpoint",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from .checkpoint import CheckpointMismatchError, CheckpointSink, MemoryCheckpointSink
    from .multistart import run_multistart
    from .options import SolverOptions
    from .result import FitResult
    from .sources import ArrayChunkSource, Chunk, ChunkSource
    from .status import FitStatus
    from .strategies import run_chunked, run_standard
    from .streaming import run_streaming
    from .validation import ValidationReport, validate_fit


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
