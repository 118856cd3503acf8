"""SciPy's ``curve_fit`` on the nlsq_tasks front door.

``curve_fit`` is :func:`nlsq_tasks.fit` with SciPy's conventions: bounds are exactly what
is passed (no model default bounds), ``check_finite`` follows ``nan_policy``, a fit that
does not converge raises ``RuntimeError`` and an undetermined covariance warns with
:class:`OptimizeWarning`. Re-exported from :mod:`nlsq_tasks` and :mod:`nlsq_tasks.api`.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validate as V
from ._plan import model_fn, resolve_model_spec
from .engine.result import FitResult

__all__ = ["curve_fit", "OptimizeWarning"]

inf = math.inf


class OptimizeWarning(UserWarning):
    """Raised as a warning when the covariance of the parameters cannot be estimated (SciPy's name)."""


def curve_fit(
    f,
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma: bool = False,
    check_finite: bool | None = None,
    bounds=(-inf, inf),
    method: str | None = None,
    jac=None,
    *,
    full_output: bool = False,
    nan_policy: str | None = None,
    **kwargs,
):
    """SciPy's ``curve_fit``: returns ``(popt, pcov)``, or with ``full_output=True``
    ``(popt, pcov, infodict, mesg, ier)``.

    As in SciPy: ``check_finite`` defaults to True unless ``nan_policy`` is given;
    ``method='lm'`` refuses bounds; a fit that does not converge raises ``RuntimeError``;
    an undetermined covariance warns with :class:`OptimizeWarning` and holds inf.
    ``method=None`` or ``"auto"`` routes by memory budget (standard, chunked or streaming);
    ``"trf"`` and ``"lm"`` run the standard in-memory solver (both are our trust-region
    reflective method; ``"lm"`` only differs in refusing bounds).

    ``jac``: we differentiate ``f`` exactly with forward-mode AD. A SciPy finite-difference
    name is accepted (AD supersedes it). A callable is checked once against the AD
    Jacobian at ``p0`` and, when it agrees, AD is used; if it disagrees a ValueError says so.

    ``infodict`` holds ``nfev``, ``fvec`` (the weighted residuals ``(f(x, popt) - y)/sigma``,
    whitened by the covariance's Cholesky factor for an ``(n, n)`` sigma, SciPy's sign) and
    ``result``, the full :class:`FitResult`. ``ier`` is ``int(result.status)`` (SciPy's
    ``least_squares`` codes 1-4 on success), ``mesg`` its message.

    Keyword arguments are those of :func:`fit` (``loss``, ``max_nfev`` -- or SciPy's alias
    ``maxfev`` --, ``ftol``, ``workflow``, ``goal``, ``memory_limit_gb``...). A model's own
    default bounds are not applied here: bounds are exactly what is passed, as in SciPy.
    """
    import warnings

    from . import api  # the shared front door (imported here: api re-exports this module)

    if "maxfev" in kwargs:
        if kwargs.get("max_nfev") is not None:
            raise V.FitTypeError("maxfev", kwargs["maxfev"], "pass either maxfev or max_nfev, not both.")
        kwargs["max_nfev"] = kwargs.pop("maxfev")
    workflow = kwargs.pop("workflow", "auto")
    goal = kwargs.pop("goal", None)
    memory_limit_gb = kwargs.pop("memory_limit_gb", None)
    V.check_kwargs(kwargs, tuple(k for k in api.FIT_KWARGS if k != "nan_policy") + ("maxfev",), "curve_fit")
    if check_finite is None:
        check_finite = nan_policy is None
    result = api._fit_arrays(
        f, xdata, ydata, p0, sigma, absolute_sigma, check_finite, bounds, method, workflow, goal,
        memory_limit_gb, {**kwargs, "nan_policy": nan_policy}, where="curve_fit", model_bounds=False,
        jac=jac,
    )
    if not result.success:
        raise RuntimeError("Optimal parameters not found: " + result.message)
    popt, pcov = np.asarray(result.popt), np.asarray(result.pcov)
    if not np.all(np.isfinite(pcov)):
        warnings.warn("Covariance of the parameters could not be estimated", OptimizeWarning, stacklevel=2)
    if not full_output:
        return popt, pcov
    infodict = {"nfev": int(result.nfev), "fvec": _weighted_residuals(f, result, xdata, ydata, sigma, nan_policy), "result": result}
    return popt, pcov, infodict, result.message, int(result.status)


def _weighted_residuals(f, result: FitResult, xdata, ydata, sigma, nan_policy) -> np.ndarray:
    """SciPy's ``fvec``: ``(f(x, popt) - y) / sigma`` (or ``L^{-1}(f - y)`` for a covariance)."""
    import jax.numpy as jnp

    data = V.check_data(xdata, ydata, sigma, check_finite=False, nan_policy=nan_policy if nan_policy == "omit" else None)
    fn = model_fn(resolve_model_spec(f, result.popt))
    r = np.asarray(fn(jnp.asarray(data.x), *[jnp.asarray(v) for v in result.popt])) - data.y
    if data.sigma is None:
        return r
    if data.sigma.ndim == 1:
        return r / data.sigma
    from jax.scipy.linalg import solve_triangular

    L = np.linalg.cholesky(data.sigma)
    return np.asarray(solve_triangular(jnp.asarray(L), jnp.asarray(r), lower=True))
