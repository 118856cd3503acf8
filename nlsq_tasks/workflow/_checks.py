"""Argument checks shared by the workflow API.

Every public entry point of :mod:`nlsq_tasks.workflow` validates its arguments here, so
that a bad value fails at the front door with a message naming the argument, the value
and what is allowed, instead of surfacing later as an obscure numeric error.

``bool`` is rejected where an integer is expected: ``True`` is an ``int`` in Python, and
``n_points=True`` is almost certainly a mistake, not "one point".
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integral number within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{_upto(maximum)}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum} (allowed: {minimum} to {maximum}), got {value!r}")
    return value


def _upto(maximum: int | float | None) -> str:
    return "" if maximum is None else f" and <= {maximum}"


def check_float(
    name: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
) -> float:
    """Return ``value`` as a finite ``float`` satisfying the given bounds.

    The allowed range is spelled out in the error, e.g. ``safety_factor must be in (0, 1]``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    lo = "(" + _fmt(gt) if gt is not None else ("[" + _fmt(ge) if ge is not None else "(-inf")
    hi = _fmt(le) + "]" if le is not None else "inf)"
    allowed = f"{lo}, {hi}"
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in {allowed}, got {value!r}")
    if (gt is not None and not value > gt) or (ge is not None and not value >= ge) or (le is not None and not value <= le):
        raise ValueError(f"{name} must be in {allowed}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_str(name: str, value: Any, *, allowed: tuple[str, ...] | None = None, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
    if allowed is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _fmt(x: float) -> str:
    return f"{x:g}"
