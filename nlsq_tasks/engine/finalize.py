"""Turn the final trust-region state into a :class:`~.result.FitResult`.

Everything here is ``p x p`` or scalar work on the host: the statistics come from the
fused pass at the accepted point (``state.neq``), so no data is touched again.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

import warnings

from .covariance import covariance
from .normal_eqs import LeastSquaresFactor
from .options import SolverOptions
from .result import FitResult, FitStatistics
from .status import FitStatus
from .trust_region import TRState


def statistics(neq: LeastSquaresFactor, sst: float, n_params: int) -> FitStatistics:
    return FitStatistics(
        n_points=int(round(float(neq.count))),
        n_params=int(n_params),
        chi2=float(neq.chi2),
        ssr=float(neq.ssr),
        sst=float(sst),
    )


def build_result(
    state: TRState,
    sst: float,
    *,
    options: SolverOptions,
    param_names: Sequence[str],
    lower: np.ndarray,
    upper: np.ndarray,
    strategy: str,
    timings: dict[str, float],
) -> FitResult:
    """A FitResult from a finished state (``state.status`` must not be RUNNING)."""
    neq = LeastSquaresFactor(*(a if np.ndim(a) == 0 else np.asarray(a) for a in state.neq))  # scalars as they are
    p = int(np.asarray(state.p).shape[0])
    stats = statistics(neq, sst, p)
    status = FitStatus(int(state.status))
    if status == FitStatus.RUNNING:  # the loop only exits with a stop code; be explicit anyway
        status = FitStatus.MAX_NFEV
    if status == FitStatus.NONFINITE and not np.all(np.isfinite(neq.R)):
        cov = None
        pcov = np.full((p, p), np.inf)
    else:
        cov = covariance(neq.R, float(neq.cost), stats.n_points, options.absolute_sigma)
        pcov = cov.pcov
    notes = []
    if cov is not None and cov.undetermined:
        notes.append(undetermined_note([param_names[i] for i in cov.undetermined], cov.condition))
    if status == FitStatus.MAX_NFEV:
        notes.append(f"Stopped at the evaluation limit (max_nfev={options.max_evaluations(p)}, {int(state.nfev)} "
                     f"evaluations) with gradient norm {float(state.g_norm):.3g} (gtol={options.gtol:g}): not converged; "
                     "raise max_nfev, or start closer to the solution.")
    return FitResult(
        popt=np.array(state.p, dtype=np.float64),
        pcov=pcov,
        status=status,
        nfev=int(state.nfev),
        njev=int(state.njev),
        nit=int(state.nit),
        cost=float(neq.cost),
        stats=stats,
        param_names=list(param_names),
        lower=np.asarray(lower, dtype=np.float64).copy(),
        upper=np.asarray(upper, dtype=np.float64).copy(),
        grad_norm=float(state.g_norm),
        strategy=strategy,
        tolerances={"ftol": float(options.ftol), "xtol": float(options.xtol), "gtol": float(options.gtol)},
        timings=dict(timings),
        loss=options.loss,
        extra_warnings=notes,
    )


def undetermined_note(names: list[str], condition: float) -> str:
    """The note (and OptimizeWarning) naming parameters the data do not determine."""
    return (f"Parameters {names} are not determined by the data (the Jacobian is rank-deficient or numerically "
            f"singular, condition number {condition:.3g}): their variances are inf.")


def emit_warnings(result: FitResult) -> None:
    """Issue the result's notes as Python warnings (once, by the front door): an
    :class:`OptimizeWarning` naming undetermined parameters, and one for a fit that
    stopped at its evaluation limit."""
    for note in result.extra_warnings:
        if note.startswith(("Parameters [", "Stopped at the evaluation limit")):
            from .._warnings import optimize_warning  # only when there is something to say

            warnings.warn(note, optimize_warning(), stacklevel=_caller_level())


def _caller_level() -> int:
    """The stack level of the first frame outside this package (the user's call)."""
    import sys

    package = __name__.split(".")[0]
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_globals.get("__name__", "") + ".").startswith(package + "."):
        frame, level = frame.f_back, level + 1
    return level
