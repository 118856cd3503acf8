"""SciPy's ``curve_fit`` on the nlsq_tasks front door: a drop-in, behaviour for behaviour.

``curve_fit`` is :func:`nlsq_tasks.fit` with SciPy's conventions, read from SciPy's own
``curve_fit`` (``scipy/optimize/_minpack_py.py``):

- ``f`` may be written with NumPy (``np.exp``): it then runs on the host with a
  finite-difference Jacobian (``jac='2-point'`` by default, ``'3-point'``, ``'cs'`` or a
  callable), see :mod:`._host_model`; a ``jnp`` model is differentiated exactly.
- ``xdata`` that is not a list, tuple or array (``None``, any object) is passed to ``f``
  unchanged, as SciPy does; ``f`` is then evaluated on all points at once.
- a scalar (size-1) ``ydata`` is broadcast against the model's output; a scalar ``sigma``
  is one standard deviation for every point.
- ``method``: None/``'auto'`` routes by memory budget; ``'trf'`` and ``'lm'`` run the
  standard in-memory trust-region reflective solver (``'lm'`` refuses bounds, as SciPy;
  it is not MINPACK's iteration); ``'dogbox'`` runs that same bounded trust-region
  reflective solver -- dogbox's rectangular trust region is not implemented; the
  result's notes say so (see :func:`curve_fit`).
- errors as SciPy raises them: ``args`` in kwargs and a bad ``nan_policy`` are ValueErrors
  with SciPy's messages, more parameters than points is a TypeError, a fit that does not
  converge is a RuntimeError, an undetermined covariance warns with :class:`OptimizeWarning`
  (a subclass of SciPy's when SciPy is installed).
- ``full_output=True`` gives ``infodict`` with ``nfev``, ``fvec``, ``fjac``, ``ipvt``, ``qtf``
  (as ``leastsq`` computes them: a column-pivoted QR of the weighted Jacobian at ``popt``),
  plus ``result``, the :class:`FitResult`.

Beyond SciPy: bounds are exactly what is passed (no model default bounds), equal lower and
upper bounds or ``fixed={name: value}`` hold a parameter (see :mod:`._fixed`), and the
returned tuple also has ``.popt``, ``.pcov``, ``.x``, ``.result`` and every attribute of the
:class:`FitResult` (``.success``, ``.report()``...).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from . import _validate as V
from ._fixed import _bounds
from ._model_prep import whole_data_model
from ._plan import resolve_model_spec
from ._warnings import optimize_warning

__all__ = ["curve_fit", "CurveFitResult", "OptimizeWarning"]

inf = math.inf
METHODS = (None, "auto", "trf", "lm", "dogbox")
DOGBOX_NOTE = ("method='dogbox' ran the bounded trust-region reflective solver ('trf'): dogbox's rectangular "
               "trust region is not implemented; both minimise the same problem within the same bounds.")


def __getattr__(name):
    if name == "OptimizeWarning":  # made on first use (see _warnings)
        return optimize_warning()
    raise AttributeError(name)


class ParameterCountError(V.FitInputError, TypeError):
    """More parameters than data points: a TypeError as in SciPy (and a FitInputError)."""


class CurveFitResult(tuple):
    """``(popt, pcov)`` -- or ``(popt, pcov, infodict, mesg, ier)`` with ``full_output`` --
    that also has attributes: ``popt``, ``pcov``, ``x`` (``popt``, as ``least_squares``),
    ``result`` (the :class:`FitResult`) and, through it, ``success``, ``message``, ``nfev``,
    ``perr``, ``report()``, ``summary()``..."""

    def __new__(cls, values, result, infodict: dict | None = None):
        self = super().__new__(cls, values)
        self.result = result
        self.infodict = infodict
        return self

    popt = property(lambda self: self[0])
    pcov = property(lambda self: self[1])
    x = property(lambda self: self[0])

    @property
    def mesg(self) -> str:
        return self.result.message

    @property
    def ier(self) -> int:
        return int(self.result.status)

    def __getattr__(self, name):
        if name.startswith("__") or name in ("result", "infodict"):
            raise AttributeError(name)
        return getattr(self.result, name)

    def __reduce__(self):
        return (CurveFitResult, (tuple(self), self.result, self.infodict))


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
    ``(popt, pcov, infodict, mesg, ier)``, as a :class:`CurveFitResult` (a tuple with
    attributes). See the module documentation for every SciPy behaviour kept.

    Keyword arguments are those of :func:`fit` (``loss``, ``max_nfev`` -- or SciPy's alias
    ``maxfev`` --, ``ftol``, ``fixed``, ``workflow``, ``goal``, ``memory_limit_gb``...).

    ``method``: every method runs one solver, the trust-region reflective iteration of
    :mod:`nlsq_tasks.engine.trust_region` (SciPy's ``least_squares(method='trf')`` with
    ``x_scale='jac'``, plus MINPACK's stronger shrink after a trial that raises the cost
    100-fold, which SciPy's ``'lm'`` has and its ``'trf'`` lacks):

    - None / ``'auto'``: routed by the memory budget (standard, chunked or streaming);
    - ``'trf'`` and ``'lm'``: the standard in-memory strategy; ``'lm'`` refuses bounds, as
      SciPy does. It is *not* MINPACK's Levenberg-Marquardt: iterates and evaluation
      counts differ from SciPy's ``'lm'``, while the minimum found agrees to the tolerances;
    - ``'dogbox'``: accepted for drop-in use, but runs the same bounded trust-region
      reflective solver: dogbox's rectangular trust region and its dogleg steps are not
      implemented. Both minimise the same problem within the same bounds, so a converged
      fit reaches the same minimum, by other iterates (SciPy's dogbox can also stop
      elsewhere on problems with several minima). The result's warnings say so.
    """
    from . import api  # the shared front door (imported here: api re-exports this module)

    if "args" in kwargs:  # SciPy's rule: f takes its parameters positionally, nothing else
        raise V.FitInputError("args", kwargs["args"], "'args' is not a supported keyword argument.")
    if "maxfev" in kwargs:
        if kwargs.get("max_nfev") is not None:
            raise V.FitTypeError("maxfev", kwargs["maxfev"], "pass either maxfev or max_nfev, not both.")
        kwargs["max_nfev"] = kwargs.pop("maxfev")
    workflow = kwargs.pop("workflow", "auto")
    goal = kwargs.pop("goal", None)
    memory_limit_gb = kwargs.pop("memory_limit_gb", None)
    if kwargs:
        V.check_kwargs(kwargs, tuple(k for k in api.FIT_KWARGS if k != "nan_policy") + ("maxfev",), "curve_fit")
    method = V.one_of("method", method, METHODS, normalize=lambda m: m.lower() if isinstance(m, str) else m)
    notes = [DOGBOX_NOTE] if method == "dogbox" else []
    if check_finite is None:
        check_finite = nan_policy is None
    if nan_policy is not None:
        if nan_policy == "propagate":
            raise V.FitInputError("nan_policy", nan_policy, "`nan_policy='propagate'` is not supported by this function.")
        if nan_policy not in ("raise", "omit"):
            raise V.FitInputError("nan_policy", nan_policy, "nan_policy must be one of {None, 'raise', 'omit'}")

    y = V._real_array("ydata", ydata)
    if y.size == 0:
        raise V.FitInputError("ydata", y.shape, "`ydata` must not be empty!")
    array_x = xdata is not None and (isinstance(xdata, (list, tuple, np.ndarray)) or hasattr(xdata, "__array__"))
    x = V._real_array("xdata", xdata) if array_x else None
    whole = not array_x or x.ndim > 2  # f gets xdata as it is, all points at once
    if not check_finite and nan_policy is not None:
        x, y, sigma, dropped = _nan_policy(nan_policy, x, y, sigma)
        if dropped:
            notes.append(f"nan_policy='omit' dropped {dropped} point(s) with NaN.")

    model = resolve_model_spec(f, p0)
    names = list(model.param_names)
    if y.ndim == 0 or (y.size == 1 and (whole or x.shape[-1] != 1)):
        y = np.full(_output_size(model, xdata if whole else x, p0, names, bounds), float(y.ravel()[0]))
    n = int(y.shape[0])
    fixed = kwargs.get("fixed")
    n_free = len(names) - (len(fixed) if isinstance(fixed, dict) else 0)
    if n_free > n:
        raise ParameterCountError("ydata", n, f"The number of func parameters={n_free} must not exceed the number of "
                                  f"data points={n}")
    sigma = _sigma(sigma, n)

    f_in = f
    if whole:
        lower, upper = _bounds(bounds, names)
        p_start = V.feasible_start(lower, upper) if p0 is None else np.atleast_1d(np.asarray(p0, np.float64)).ravel()
        f_in = whole_data_model(model, xdata if x is None else x, n, p_start, names, jac=jac, lower=lower, upper=upper)
        x = np.arange(n, dtype=np.float64)
    try:
        result = api._fit_arrays(
            f_in, x, y, p0, sigma, absolute_sigma, check_finite, bounds, "trf" if method == "dogbox" else method,
            workflow, goal, memory_limit_gb, {**kwargs, "nan_policy": None}, where="curve_fit", model_bounds=False,
            jac=jac,
        )
    except V.FitInputError as exc:  # SciPy's words for a start outside the bounds
        if exc.field == "p0" and "outside the bounds" in str(exc):
            raise V.FitInputError("p0", exc.value, f"Initial guess is outside of provided bounds: {exc}") from exc
        raise
    result.extra_warnings.extend(notes)
    if whole:
        result.xdata = xdata
    if not result.success:
        raise RuntimeError("Optimal parameters not found: " + result.message)
    popt, pcov = np.asarray(result.popt), np.asarray(result.pcov)
    if not np.isfinite(pcov).all():
        warnings.warn("Covariance of the parameters could not be estimated", optimize_warning(), stacklevel=2)
    if not full_output:
        return CurveFitResult((popt, pcov), result)
    target = (xdata if x is None or whole else x)
    infodict = _infodict(model, target, y, sigma, popt, jac, result, whole=whole)
    return CurveFitResult((popt, pcov, infodict, result.message, int(result.status)), result, infodict)


def _nan_policy(policy: str, x, y, sigma):
    """SciPy's NaN handling when ``check_finite`` is off: 'raise' on any NaN, 'omit' drops
    the points with a NaN in x (any feature) or y, and their sigma entries."""
    has_nan = np.isnan(y) if y.ndim else np.zeros(0, bool)
    if x is not None and y.ndim:
        xn = np.isnan(x)
        has_nan = has_nan | (xn.any(axis=tuple(range(xn.ndim - 1))) if xn.ndim > 1 else xn)
    if policy == "raise":
        if has_nan.any() or (x is not None and np.isnan(x).any()) or np.isnan(y).any():
            raise V.FitInputError("xdata/ydata", int(has_nan.sum()), "The input contains nan values")
        return x, y, sigma, 0
    if not has_nan.any():
        return x, y, sigma, 0
    keep = ~has_nan
    x = None if x is None else x[..., keep]
    y = y[keep]
    if sigma is not None:
        s = np.asarray(sigma, dtype=np.float64)
        sigma = s[keep] if s.ndim == 1 else (s[np.ix_(keep, keep)] if s.ndim == 2 else s)
    return x, y, sigma, int(has_nan.sum())


def _sigma(sigma, n: int):
    """SciPy's sigma: a scalar or (n,) standard deviations, or an (n, n) covariance."""
    if sigma is None:
        return None
    s = V._real_array("sigma", sigma)
    if s.size == 1 and s.shape != (n, n):
        return np.full(n, float(s.ravel()[0]))
    if s.shape == (n,):
        return s
    if s.shape == (n, n):
        try:
            np.linalg.cholesky(s)
        except np.linalg.LinAlgError as exc:
            raise V.FitInputError("sigma", s.shape, "`sigma` must be positive definite.") from exc
        return s
    raise V.FitInputError("sigma", s.shape, f"`sigma` has incorrect shape. Allowed: a scalar, ({n},) standard "
                          f"deviations or a ({n}, {n}) covariance matrix; got {s.shape}.")


def _output_size(model, x, p0, names, bounds) -> int:
    """How many values the model gives at the start (a scalar ydata is broadcast to it)."""
    p = V.feasible_start(*_bounds(bounds, names)) if p0 is None else np.atleast_1d(np.asarray(p0, np.float64)).ravel()
    fn = model.fn if hasattr(model, "fn") else model
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(fn(x, *p))
    except Exception as exc:
        raise V.ModelEvaluationError("f", p.tolist(), f"model raised {type(exc).__name__}: {V._first_line(exc)} "
                                     "when evaluated at p0 to size a scalar ydata.") from exc
    return int(max(out.size, 1))


# -- infodict ---------------------------------------------------------------------------
def _infodict(model, target, y, sigma, popt, jac, result, *, whole: bool) -> dict[str, Any]:
    """``nfev``, ``fvec`` (``(f(x, popt) - y) / sigma``, whitened for a covariance), and
    ``fjac``, ``ipvt``, ``qtf`` as MINPACK's ``lmder`` returns them (via ``leastsq``)."""
    from ._host_model import HostFunction, traces_with_jax

    fn = model.fn if hasattr(model, "fn") else model
    n = y.shape[0]

    def values(p) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(fn(target, *p), dtype=np.float64), (n,))

    fvec = values(popt) - y
    free = [i for i, name in enumerate(result.param_names) if name not in getattr(result, "fixed", [])]
    if callable(jac):
        J = np.asarray(jac(target, *popt), dtype=np.float64).reshape(n, -1)
    elif traces_with_jax(fn, target, popt) is None:
        import jax
        import jax.numpy as jnp

        tj = jnp.asarray(target) if isinstance(target, np.ndarray) else target
        J = np.asarray(jax.jacfwd(lambda q: jnp.broadcast_to(fn(tj, *[q[i] for i in range(q.shape[0])]), (n,)))(
            jnp.asarray(popt)))
    else:
        host = HostFunction(fn, len(popt), n, jac=jac, lower=result.lower, upper=result.upper, whole=target,
                            is_whole=True)
        J = host.jacobian(None, np.asarray(popt, np.float64), values(popt))
    J = J[:, free]
    if sigma is not None:
        if sigma.ndim == 1:
            fvec, J = fvec / sigma, J / sigma[:, None]
        else:
            L = np.linalg.cholesky(sigma)
            fvec, J = np.linalg.solve(L, fvec), np.linalg.solve(L, J)
    fjac, ipvt, qtf = _pivoted_qr(J, fvec)
    return {"nfev": int(result.nfev), "fvec": fvec, "fjac": fjac, "ipvt": ipvt, "qtf": qtf, "result": result}


def _pivoted_qr(J: np.ndarray, fvec: np.ndarray):
    """Householder QR with column pivoting (MINPACK's ``qrfac``): ``J P = Q R`` with
    ``|diag R|`` non-increasing. Returns ``fjac`` ``(p, m)`` whose transpose holds ``R`` in
    its upper ``p x p`` triangle (``leastsq``'s layout), ``ipvt`` (0-based, as SciPy returns
    it: column ``j`` of ``P`` is column ``ipvt[j]`` of the identity) and ``qtf = (Q^T fvec)[:p]``."""
    A = np.array(J, dtype=np.float64, copy=True)
    b = np.array(fvec, dtype=np.float64, copy=True)
    m, p = A.shape
    perm = np.arange(p)
    for k in range(min(m, p)):  # bounded: one column per step
        norms = np.einsum("ij,ij->j", A[k:, k:], A[k:, k:])
        j = k + int(np.argmax(norms))
        if j != k:
            A[:, [k, j]] = A[:, [j, k]]
            perm[[k, j]] = perm[[j, k]]
        v = A[k:, k].copy()
        alpha = -math.copysign(float(np.linalg.norm(v)), float(v[0]) if v[0] != 0 else 1.0)
        v[0] -= alpha
        vv = float(v @ v)
        if vv == 0.0:
            continue
        A[k:, k:] -= np.outer(v, (2.0 / vv) * (v @ A[k:, k:]))
        b[k:] -= v * ((2.0 / vv) * float(v @ b[k:]))
    R = np.triu(A[:p, :p])
    fjac = np.zeros((p, m))
    fjac[:, :p] = R.T
    return fjac, perm.astype(np.int32), b[:p]
