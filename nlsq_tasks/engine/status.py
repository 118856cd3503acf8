"""Termination status of a fit: an enum whose members carry their messages.

Follows the optimistix ``RESULTS`` idea: a status is data, and its message is part of it,
so every strategy reports the same codes with the same words.
"""

from __future__ import annotations

import enum


class FitStatus(enum.IntEnum):
    """Why the solver stopped. ``int(status)`` is a stable code; ``status.message`` explains it.

    Codes follow SciPy's ``least_squares`` where a SciPy meaning exists
    (-1 bad input, 0 max_nfev, 1 gtol, 2 ftol, 3 xtol, 4 ftol and xtol).
    """

    INVALID_INPUT = -1
    MAX_NFEV = 0
    GTOL = 1
    FTOL = 2
    XTOL = 3
    FTOL_XTOL = 4
    NONFINITE = 5
    INTERRUPTED = 6
    RUNNING = 7

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def converged(self) -> bool:
        return self in (FitStatus.GTOL, FitStatus.FTOL, FitStatus.XTOL, FitStatus.FTOL_XTOL)


_MESSAGES = {
    FitStatus.INVALID_INPUT: "Invalid input; the fit was not started.",
    FitStatus.MAX_NFEV: "The maximum number of function evaluations (max_nfev) was exceeded before convergence.",
    FitStatus.GTOL: "Converged: the scaled gradient norm fell below gtol.",
    FitStatus.FTOL: "Converged: the relative reduction of the cost fell below ftol.",
    FitStatus.XTOL: "Converged: the relative step size fell below xtol.",
    FitStatus.FTOL_XTOL: "Converged: both the ftol and the xtol conditions are satisfied.",
    FitStatus.NONFINITE: "Stopped: the model produced non-finite residuals or Jacobian at the current parameters.",
    FitStatus.INTERRUPTED: "Interrupted; resume from the latest checkpoint.",
    FitStatus.RUNNING: "Running.",
}
