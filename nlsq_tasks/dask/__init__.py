"""Passes on a Dask cluster (``pip install nlsq-flows[dask]``).

:class:`DaskExecutor` runs the streaming driver's passes on a ``distributed`` cluster:
workers read their own chunks from storage, keep them resident when the cluster's memory
holds them, and return per-chunk partials that the driver folds in chunk order, so the
answer is the sequential executor's bit for bit. :func:`parse_executor` and
:func:`connect` turn an executor choice (``"local"``, ``"local-cluster:N"``, a scheduler
address) into a client. Names load lazily: importing this package does not import
``distributed``.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "DaskExecutor": ".executor",
    "DaskPasses": ".executor",
    "ChunkReadError": ".worker",
    "ExecutorChoice": ".cluster",
    "ExecutorChoiceError": ".cluster",
    "parse_executor": ".cluster",
    "connect": ".cluster",
    "decide_residency": ".cluster",
    "plan_residency": ".cluster",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
