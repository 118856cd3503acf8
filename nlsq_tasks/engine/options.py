"""Solver options shared by every strategy (validated by the front door, trusted here).

Frozen and hashable so that a compiled solver can be cached per option set.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MIN_NFEV = 2000


@dataclass(frozen=True)
class SolverOptions:
    """Everything the trust-region loop needs besides data, p0 and bounds.

    ``loss`` is a name registered in :mod:`nlsq_tasks.engine.loss` (``loss_names()``).
    ``x_scale`` is ``"jac"`` (MINPACK-style running column norms of J) or a tuple of
    positive per-parameter scales. ``max_nfev`` bounds the loop; None means
    ``max(2000, 100 * n_params)``: SciPy's TRF allows ``100 * n_params``, which stops hard
    problems short (NIST MGH17 from its first start needs 934 evaluations for 5
    parameters); a fit that does stop there says so in its status, warnings and report.
    """

    ftol: float = 1e-8
    xtol: float = 1e-8
    gtol: float = 1e-8
    max_nfev: int | None = None
    loss: str = "linear"
    f_scale: float = 1.0
    x_scale: str | tuple[float, ...] = "jac"
    absolute_sigma: bool = False

    def max_evaluations(self, n_params: int) -> int:
        return int(self.max_nfev) if self.max_nfev is not None else max(DEFAULT_MIN_NFEV, 100 * n_params)
