"""Turn the final trust-region state into a :class:`~.result.FitResult`.

Everything here is ``p x p`` or scalar work on the host: the statistics come from the
fused pass at the accepted point (``state.neq``), so no data is touched again.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .covariance import covariance
from .normal_eqs import NormalEquations
from .options import SolverOptions
from .result import FitResult, FitStatistics
from .status import FitStatus
from .trust_region import TRState


def statistics(neq: NormalEquations, sst: float, n_params: int) -> FitStatistics:
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
    neq = NormalEquations(*(np.asarray(a) for a in state.neq))
    p = int(np.asarray(state.p).shape[0])
    stats = statistics(neq, sst, p)
    status = FitStatus(int(state.status))
    if status == FitStatus.RUNNING:  # the loop only exits with a stop code; be explicit anyway
        status = FitStatus.MAX_NFEV
    if status == FitStatus.NONFINITE and not np.all(np.isfinite(neq.JtJ)):
        pcov = np.full((p, p), np.inf)
    else:
        pcov = covariance(neq.JtJ, float(neq.cost), stats.n_points, options.absolute_sigma)
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
    )
