"""Models a deployment registers by name, so requests can refer to them safely.

A request's ``model`` is a string; it is never imported. Code that the deployment owns
(its entry-point module, run at worker start) registers callables or ``Model`` objects
here, and requests name them::

    from flows import register_model

    def lorentzian(x, a, x0, w):
        return a * w**2 / ((x - x0) ** 2 + w**2)

    register_model("lab_lorentzian", lorentzian)

Registered names win over built-in names; expressions are compiled by
``nlsq_tasks.models.resolve_model`` through its whitelist.
"""

from __future__ import annotations

import re
import threading
from typing import Any

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_lock = threading.Lock()
_registry: dict[str, Any] = {}


def register_model(name: str, model: Any) -> None:
    """Make ``model`` (a callable ``f(x, *params)`` or a ``Model``) available to requests as ``name``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"model name {name!r} is not allowed; use letters, digits, '_' or '-' (max 64), starting with a letter")
    if not callable(model) and not hasattr(model, "fn"):
        raise TypeError(f"model for {name!r} must be a callable f(x, *params) or a Model, got {type(model).__name__}")
    with _lock:
        _registry[name] = model


def unregister_model(name: str) -> None:
    with _lock:
        _registry.pop(name, None)


def registered_models() -> list[str]:
    with _lock:
        return sorted(_registry)


def lookup(name: str) -> Any | None:
    with _lock:
        return _registry.get(name)
