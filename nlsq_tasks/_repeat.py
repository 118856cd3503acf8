"""Cheap repeated small fits: the plan of a call is kept for the next call that asks the same.

Scientists call ``fit``/``curve_fit`` in loops: same model, same data shapes, same options,
new data. Planning such a call (resolving the model, tracing it once to check its output,
sizing the memory budget, choosing tolerances and strategy) costs more than fitting 100
points. None of it depends on the data's values, only on their shapes, so a plan is cached
under a key of everything it was made from:

``(f, shapes of x/y/sigma, whether p0 was given and its length, bounds, method, workflow,
goal, memory_limit_gb, absolute_sigma, the model-bounds rule, jac, the keyword options)``.

On a hit the call only validates its data (always) and its start: an explicit ``p0`` is
checked against the cached bounds, otherwise the model's guess runs on the new data, as
the planner would. The compiled solver is cached by the engine (:mod:`~nlsq_tasks.engine.loop`)
on the same shapes. A fit whose first evaluation is non-finite is re-planned in full, so
that the front door's clear error about the start is raised exactly as without the cache.

Only plans that are pure functions of the key are kept: the standard strategy, one start,
no validation pass, no progress callback or checkpoint, no points dropped by
``nan_policy='omit'`` (that changes the size), at most ``MAX_POINTS`` points (above, the
memory budget, which the plan records, may change between calls, and planning is cheap
next to the fit). Anything unhashable in the key means "do not cache". The memory budget a
reused plan reports (``result.budget``, the reason) is the one measured when it was made.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from . import _validate as V
from .engine.status import FitStatus

MAX_POINTS = 1_000_000
_SIZE = 128
_cache: OrderedDict[Any, Any] = OrderedDict()
_lock = threading.Lock()
_UNCACHEABLE_KWARGS = ("progress", "checkpoint", "n_starts", "validate", "fixed")


def _scalar_tuple(value) -> tuple | None:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return (arr.shape, tuple(arr.ravel().tolist())) if arr.size <= 1024 else None


_NUMBERS = (float, int)


def _bounds_key(bounds, default) -> Any:
    if bounds is default:
        return "model-default"
    if type(bounds) is tuple and len(bounds) == 2 and type(bounds[0]) in _NUMBERS and type(bounds[1]) in _NUMBERS:
        # scalar bounds (curve_fit's default (-inf, inf)): the key _scalar_tuple gives, directly
        return ("pair", ((), (float(bounds[0]),)), ((), (float(bounds[1]),)))
    if isinstance(bounds, dict):
        try:
            return ("dict", tuple(sorted((str(k), float(v[0]), float(v[1])) for k, v in bounds.items())))
        except (TypeError, ValueError, IndexError):
            return None
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        bounds = (bounds.lb, bounds.ub)
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        lo, hi = _scalar_tuple(bounds[0]), _scalar_tuple(bounds[1])
        return None if lo is None or hi is None else ("pair", lo, hi)
    return None


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _registered_models() -> tuple:
    """Which model each registered name means now: a name re-registered to another model
    (``register_model(..., overwrite=True)``) must not reuse the old plan."""
    from .models import registry

    return tuple(sorted((k, id(v)) for k, v in list(registry._registered.items())))


def plan_key(f, data, p0, bounds, default_bounds, method, workflow, goal, memory_limit_gb, absolute_sigma,
             kwargs: dict, model_bounds: bool, jac) -> tuple | None:
    """The cache key of a call, or None when the call must be planned in full."""
    if data.n_points > MAX_POINTS or data.omitted or any(kwargs.get(k) is not None for k in _UNCACHEABLE_KWARGS):
        return None
    opts = []
    for k in sorted(kwargs):
        v = kwargs[k]
        if isinstance(v, (list, np.ndarray)):
            v = _scalar_tuple(v)
        opts.append((k, v))
    b = _bounds_key(bounds, default_bounds)
    if b is None:
        return None
    parts = (
        f, _registered_models() if isinstance(f, str) else None, data.x.shape, data.y.shape, None if data.sigma is None else data.sigma.shape,
        None if p0 is None else (len(p0) if type(p0) in (list, tuple) and all(type(v) in _NUMBERS for v in p0)
                                 else int(np.size(p0))),
        b, method, workflow, goal, memory_limit_gb, bool(absolute_sigma), bool(model_bounds), jac, tuple(opts),
    )
    return parts if _hashable(parts) else None  # a tuple hashes every part: anything unhashable means "do not cache"


def reuse(key, data, p0):
    """A copy of the cached plan with this call's start, or None (not cached, or the start
    is not valid: the full planner then raises its clear error)."""
    if key is None:
        return None
    with _lock:
        plan = _cache.get(key)
        if plan is not None:
            _cache.move_to_end(key)
    if plan is None:
        return None
    try:
        if p0 is not None:
            start = plan.interior(V.check_p0(p0, plan.names, plan.lower, plan.upper))
        else:
            from ._plan import _guess  # the planner's own rule for a start from the data

            step = max(1, -(-data.n_points // 1_000_000))
            start = _guess(plan.model, data.take(slice(None, None, step)), plan.names, plan.lower, plan.upper)
    except (V.FitInputError, V.FitTypeError, ImportError):
        return None
    return plan.with_start(start)


class _Kept:
    """A cached plan and what depends only on it: its bounds' interior (see V.Interior)."""

    __slots__ = ("plan", "names", "lower", "upper", "model", "interior")

    def __init__(self, plan):
        self.plan = dataclasses.replace(plan, notes=list(plan.notes))
        self.names, self.lower, self.upper, self.model = plan.names, plan.lower, plan.upper, plan.model
        self.interior = V.Interior(plan.lower, plan.upper)
        self.plan.execution  # noqa: B018  (made once here: every copy of the plan shares it)

    def with_start(self, start):
        """A copy of the plan starting at ``start`` (its notes a fresh list: a run appends)."""
        out = object.__new__(type(self.plan))  # copy.copy of a plain dataclass, without its pickle protocol
        out.__dict__.update(self.plan.__dict__)
        out.p0, out.notes = start, list(self.plan.notes)
        return out


def remember(key, plan) -> None:
    if key is None or plan.strategy != "standard" or plan.n_starts != 1 or plan.validate:
        return
    if plan.checkpoint is not None or plan.progress is not None:
        return
    with _lock:
        _cache[key] = _Kept(plan)
        while len(_cache) > _SIZE:
            _cache.popitem(last=False)


def failed_at_start(result) -> bool:
    """The fit stopped on non-finite values at its very first evaluation (the start)."""
    return result.status == FitStatus.NONFINITE and int(result.nfev) <= 1


def clear() -> None:
    with _lock:
        _cache.clear()
