"""Parameter covariance from the final factor of J, following ``scipy.optimize.curve_fit``,
with undetermined parameters reported as such.

SciPy computes the pseudo-inverse of :math:`J^T J` from the SVD of :math:`J`, dropping
singular values :math:`s_k \\le \\epsilon \\max(n, p)\\, s_1`. We hold a ``p x p`` factor
:math:`R` with :math:`R^T R = J^T J` (loss-rescaled, as SciPy's returned ``jac``), which
has the singular values of :math:`J`. Its columns are equilibrated first,
:math:`R S` with :math:`S = \\mathrm{diag}(1/\\lVert R_{:,j}\\rVert)` (so that units do not
decide what is "small"), then

.. math::

    R S = U \\Sigma V^T,\\quad
    \\mathrm{pcov} = S \\Big(\\sum_{s_k > \\epsilon \\max(n,p) s_1} v_k v_k^T / s_k^2\\Big) S
    \\cdot \\frac{2F}{n - p}

(the last factor unless ``absolute_sigma``).

**A covariance that never lies.** SciPy's pseudo-inverse quietly gives a *finite* (often
zero) variance to a parameter the data do not determine. Here every dropped singular
direction :math:`v_k` names the parameters it involves (:math:`|v_{kj}| >` ``NULL_WEIGHT``);
their rows and columns of ``pcov`` are set to inf, and :func:`covariance` reports them so
the caller can warn by name. As in SciPy, ``pcov`` is all inf when it contains NaN, or when
``n <= p`` and the residual variance is to be estimated.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

EPS = np.finfo(np.float64).eps
_EPS = float(EPS)
NULL_WEIGHT = 1e-3  # a parameter with this much weight in a dropped direction is undetermined


class Covariance(NamedTuple):
    pcov: np.ndarray
    undetermined: list[int]  # indices of parameters the data do not determine
    condition: float  # condition number of the column-equilibrated J (inf when rank-deficient)


def _equilibrated_svd(r: np.ndarray):
    r = np.asarray(r, dtype=np.float64)
    col = np.sqrt(np.sum(r * r, axis=0))
    # every column nonzero (the usual case): 1/col, the same numbers as the guarded form
    s = 1.0 / col if col.all() else np.where(col > 0, 1.0 / np.where(col > 0, col, 1.0), 1.0)
    sv, vt = _svd(r * s[None, :])
    return s, sv, vt


try:  # the LAPACK gufunc np.linalg.svd calls, without its per-call error-state set-up (~4 us)
    from numpy.linalg import _umath_linalg

    _SVD_GUFUNC = _umath_linalg.svd_f
except (ImportError, AttributeError):  # another NumPy layout: its public svd
    _SVD_GUFUNC = None


def _svd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and ``V^T`` of a finite float64 matrix: ``np.linalg.svd``'s numbers.
    A non-finite result (LAPACK did not converge; NumPy may also warn) is redone by
    ``np.linalg.svd``, which then raises its own LinAlgError."""
    if _SVD_GUFUNC is not None:
        _, sv, vt = _SVD_GUFUNC(a, signature="d->ddd")
        if math.isfinite(float(sv[0])):
            return sv, vt
    _, sv, vt = np.linalg.svd(a)
    return sv, vt


def condition_number(r: np.ndarray) -> float:
    """Condition number of the column-equilibrated J from its factor (inf when singular)."""
    if not np.all(np.isfinite(r)):
        return float("inf")
    col = np.sqrt(np.sum(np.asarray(r) ** 2, axis=0))
    if np.any(col == 0):
        return float("inf")
    _, sv, _ = _equilibrated_svd(r)
    return float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")


def pseudo_inverse(r: np.ndarray, n_points: int) -> tuple[np.ndarray, list[int], float]:
    """:math:`(R^T R)^+` with SciPy's singular-value cut-off, the undetermined parameters,
    and the equilibrated condition number (see module docstring).

    Written for ``p x p`` factors of a few parameters, where each NumPy call costs more
    than its arithmetic: scalars are compared as Python floats (the same IEEE operations)
    and the common full-rank case skips the bookkeeping of dropped directions."""
    r = np.asarray(r, dtype=np.float64)
    p = r.shape[1]
    if not np.isfinite(r).all():
        return np.full((p, p), np.nan), list(range(p)), float("inf")
    s, sv, vt = _equilibrated_svd(r)
    values = sv.tolist()
    first, last = values[0], values[-1]
    if first > 0:
        cut = _EPS * max(n_points, p) * first  # numpy's float64 products, as Python floats
        kept = sum(v > cut for v in values)
    else:
        kept = 0
    if kept == p and vt.flags.c_contiguous:  # full rank: nothing dropped (vt[keep] would be a C-ordered copy of vt)
        binv = (vt.T / sv ** 2) @ vt
        undetermined: list[int] = []
    else:
        keep = np.array([v > cut for v in values]) if first > 0 else np.zeros(p, bool)
        vk = vt[keep]
        binv = (vk.T / sv[keep] ** 2) @ vk
        dropped = vt[~keep]
        undetermined = sorted({int(j) for row in dropped for j in np.flatnonzero(np.abs(row) > NULL_WEIGHT)})
    cond = first / last if last > 0 else float("inf")
    return binv * s[:, None] * s[None, :], undetermined, cond


def covariance(r: np.ndarray, cost: float, n_points: int, absolute_sigma: bool) -> Covariance:
    """``pcov`` as ``curve_fit`` builds it, with inf for undetermined parameters."""
    p = np.asarray(r).shape[1]
    pcov, undetermined, cond = pseudo_inverse(r, n_points)
    if np.isnan(pcov).any():
        return Covariance(np.full((p, p), np.inf), list(range(p)), cond)
    if not absolute_sigma:
        if n_points > p:
            pcov = pcov * (2.0 * cost / (n_points - p))
        else:
            return Covariance(np.full((p, p), np.inf), undetermined, cond)
    if undetermined:
        pcov = pcov.copy()
        pcov[undetermined, :] = np.inf
        pcov[:, undetermined] = np.inf
    return Covariance(pcov, undetermined, cond)
