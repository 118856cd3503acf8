"""``OptimizeWarning``: SciPy's warning category, subclassed when SciPy is installed.

SciPy users filter ``scipy.optimize.OptimizeWarning``; ours must be caught by those filters
(``issubclass(ours, scipy's)``), without SciPy becoming a dependency and without paying
for ``import scipy.optimize`` (seconds on a busy machine) in every process. So the class
is made on first use -- reading ``nlsq_tasks.OptimizeWarning`` or the first warning issued --
subclassing SciPy's when it can be imported, else ``UserWarning``.
"""

from __future__ import annotations

import threading

_CLASS: type | None = None
_LOCK = threading.Lock()


def optimize_warning() -> type:
    """The one ``OptimizeWarning`` class of this process."""
    global _CLASS
    with _LOCK:
        if _CLASS is None:
            try:
                from scipy.optimize import OptimizeWarning as base
            except Exception:  # SciPy absent or broken: a plain warning category
                base = UserWarning

            class OptimizeWarning(base):
                """Warns when the covariance of the parameters cannot be estimated (SciPy's name;
                a subclass of ``scipy.optimize.OptimizeWarning`` when SciPy is installed)."""

            OptimizeWarning.__module__ = "nlsq_tasks"
            _CLASS = OptimizeWarning
        return _CLASS


def __getattr__(name):
    if name == "OptimizeWarning":
        return optimize_warning()
    raise AttributeError(name)
