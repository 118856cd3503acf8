"""Parameter covariance from the final normal equations, following ``scipy.optimize.curve_fit``.

SciPy computes the pseudo-inverse of :math:`J^T J` from the SVD of :math:`J`, dropping
singular values :math:`s_k \\le \\epsilon \\max(n, p)\\, s_1`. We only hold
:math:`H = J^T J` (loss-rescaled, as SciPy's returned ``jac``), whose eigenvalues are
:math:`s_k^2`. To keep the digits an explicit :math:`J^T J` would lose on badly scaled
problems, :math:`H` is first equilibrated, :math:`B = S H S` with
:math:`S = \\mathrm{diag}(H)^{-1/2}`, then

.. math::

    B = V \\Lambda V^T,\\quad
    B^+ = \\sum_{\\sqrt{\\lambda_k} > \\epsilon \\max(n,p) \\sqrt{\\lambda_1}} v_k v_k^T / \\lambda_k,
    \\quad \\mathrm{pcov} = S B^+ S \\cdot \\frac{2F}{n - p}

(the last factor unless ``absolute_sigma``). As in SciPy, ``pcov`` is filled with inf when
it contains NaN, or when ``n <= p`` and the residual variance is to be estimated.
"""

from __future__ import annotations

import numpy as np

EPS = np.finfo(np.float64).eps


def pseudo_inverse(jtj: np.ndarray, n_points: int) -> np.ndarray:
    """:math:`(J^T J)^+` with SciPy's singular-value cut-off (see module docstring)."""
    jtj = np.asarray(jtj, dtype=np.float64)
    p = jtj.shape[0]
    if not np.all(np.isfinite(jtj)):
        return np.full((p, p), np.nan)
    diag = np.diag(jtj).copy()
    s = np.where(diag > 0, 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 1.0)
    b = jtj * s[:, None] * s[None, :]
    b = 0.5 * (b + b.T)
    lam, vec = np.linalg.eigh(b)
    sv = np.sqrt(np.maximum(lam, 0.0))
    keep = sv > EPS * max(n_points, p) * sv.max() if sv.max() > 0 else np.zeros(p, bool)
    vk = vec[:, keep]
    binv = (vk / lam[keep]) @ vk.T
    return binv * s[:, None] * s[None, :]


def covariance(jtj: np.ndarray, cost: float, n_points: int, absolute_sigma: bool) -> np.ndarray:
    """``pcov`` exactly as ``curve_fit`` builds it from ``least_squares``' result."""
    p = np.asarray(jtj).shape[0]
    pcov = pseudo_inverse(jtj, n_points)
    if np.isnan(pcov).any():
        return np.full((p, p), np.inf)
    if not absolute_sigma:
        if n_points > p:
            pcov = pcov * (2.0 * cost / (n_points - p))
        else:
            pcov = np.full((p, p), np.inf)
    return pcov
