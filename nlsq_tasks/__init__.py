"""nlsq_tasks: exact, memory-bounded nonlinear least squares in JAX (float64).

>>> from nlsq_tasks import fit, curve_fit, FitResult
"""

from . import _x64  # noqa: F401  (float64 on before any array exists)
from . import _compile_cache  # noqa: F401  (compiled solvers persist across processes)
from .engine.result import FitResult
from .engine.status import FitStatus

__all__ = [
    "FitResult", "FitStatus", "FitPlan", "plan_fit", "fit", "fit_source", "curve_fit", "OptimizeWarning",
    "fit_batch", "fit_global", "BatchFitResult",
]


def __getattr__(name):
    # The front door imports the whole engine; load it on first use so that
    # `import nlsq_tasks.workflow` stays light.
    if name in ("fit", "fit_source", "curve_fit"):
        from . import api

        return getattr(api, name)
    if name == "OptimizeWarning":  # a subclass of SciPy's when SciPy is installed (made on first use)
        from ._warnings import optimize_warning

        return optimize_warning()
    if name in ("fit_batch", "fit_global", "BatchFitResult"):
        from . import batch

        return getattr(batch, name)
    if name in ("FitPlan", "plan_fit"):
        from . import planning

        return getattr(planning, name)
    raise AttributeError(name)
