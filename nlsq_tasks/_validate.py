"""Input validation for the front door (:mod:`nlsq_tasks.api`).

Everything here runs before the solver traces anything, so a bad argument is reported
as a :class:`FitInputError` (a ``ValueError``) or :class:`FitTypeError` (a ``TypeError``)
that names the argument, shows the offending value or shape, and says what is allowed,
instead of surfacing later as a shape error from inside a ``lax.while_loop``.

Data layout follows SciPy: ``xdata`` is ``(n,)`` or ``(k, n)`` (``k`` features),
``ydata`` is ``(n,)``, ``sigma`` is ``(n,)`` (standard deviations) or ``(n, n)``
(a covariance matrix).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .engine.loss import loss_names

# How many points the model is evaluated on to check its output before the real fit:
# enough to catch shape and traceability errors, small enough to cost nothing.
PROBE_POINTS = 8

NAN_POLICIES = ("raise", "omit", None)


class FitInputError(ValueError):
    """A fit argument has an invalid value. ``field`` names it, ``value`` holds it."""

    def __init__(self, field: str, value: Any, message: str):
        self.field, self.value = field, value
        super().__init__(message)


class FitTypeError(TypeError):
    """A fit argument has the wrong type, or an unknown keyword was passed."""

    def __init__(self, field: str, value: Any, message: str):
        self.field, self.value = field, value
        super().__init__(message)


class ModelEvaluationError(FitInputError):
    """The model raised, returned the wrong shape, or returned non-finite values at p0."""


def short(value: Any, limit: int = 80) -> str:
    """A one-line repr of a value, cut to ``limit`` characters (arrays can be huge)."""
    if isinstance(value, np.ndarray) and value.size > 8:
        return f"array(shape={value.shape}, dtype={value.dtype})"
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_of(field: str, value: Any, allowed: Sequence[Any], *, normalize: Callable | None = None) -> Any:
    """``value`` if it is in ``allowed`` (after ``normalize``), else a FitInputError listing them."""
    key = normalize(value) if (normalize is not None and value is not None) else value
    if key in allowed:
        return key
    raise FitInputError(field, value, f"{field}={value!r} is not valid; allowed: {', '.join(map(repr, allowed))}.")


# -- data -------------------------------------------------------------------------------
@dataclass
class Data:
    """Validated, float64 data. ``omitted`` counts points dropped by nan_policy='omit'."""

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray | None
    omitted: int = 0

    @property
    def n_points(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_features(self) -> int:
        return 1 if self.x.ndim == 1 else int(self.x.shape[0])

    def take(self, sl) -> tuple[np.ndarray, np.ndarray]:
        return (self.x[sl] if self.x.ndim == 1 else self.x[:, sl]), self.y[sl]


def _real_array(field: str, value: Any) -> np.ndarray:
    if type(value) is np.ndarray and value.dtype == np.float64:  # already what is asked: as is
        return value
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise FitTypeError(field, value, f"{field} could not be converted to an array ({exc}).") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise FitTypeError(field, value, f"{field} must hold real numbers; got dtype {arr.dtype}.")
    if np.iscomplexobj(arr):
        raise FitTypeError(field, value, f"{field} must hold real numbers; got complex dtype {arr.dtype}.")
    return arr.astype(np.float64, copy=False)


def check_data(xdata, ydata, sigma=None, *, check_finite: bool = True, nan_policy: str | None = None) -> Data:
    """Shapes, emptiness, finiteness and sigma. Returns float64 arrays.

    Non-finite points (NaN or inf in x, y, or a 1-D sigma) are dropped when
    ``nan_policy='omit'``; they raise when ``nan_policy='raise'`` or when ``check_finite``
    is true; with ``check_finite=False`` and no nan_policy they are passed on as SciPy does.
    """
    nan_policy = one_of("nan_policy", nan_policy, NAN_POLICIES)
    y = _real_array("ydata", ydata)
    if y.ndim != 1:
        raise FitInputError("ydata", y.shape, f"ydata must be 1-D with shape (n,); got shape {y.shape}.")
    n = y.shape[0]
    if n == 0:
        raise FitInputError("ydata", y.shape, "ydata is empty; at least one data point per parameter is needed.")
    x = _real_array("xdata", xdata)
    if x.ndim == 1:
        if x.shape[0] != n:
            raise FitInputError(
                "xdata", x.shape, f"xdata has {x.shape[0]} points but ydata has {n}; they must have the same length."
            )
    elif x.ndim == 2:
        if x.shape[1] != n:
            hint = " (x looks transposed: pass xdata.T, SciPy's (k, n) layout)" if x.shape[0] == n else ""
            raise FitInputError(
                "xdata",
                x.shape,
                f"xdata with 2 dimensions must have shape (k, n) = (k, {n}) to match ydata; got {x.shape}{hint}.",
            )
    else:
        raise FitInputError("xdata", x.shape, f"xdata must have shape (n,) or (k, n) with n={n}; got {x.shape}.")

    s = None
    if sigma is not None:
        s = _real_array("sigma", sigma)
        if s.shape not in ((n,), (n, n)):
            raise FitInputError(
                "sigma", s.shape, f"sigma must have shape (n,) = ({n},) or (n, n) = ({n}, {n}); got {s.shape}."
            )

    # Which points are bad: NaN/inf in x, y, or (1-D) sigma. A bad covariance entry cannot
    # be pinned to one point, so it is reported by check_sigma below instead.
    bad = ~np.isfinite(y)
    bad |= ~np.isfinite(x) if x.ndim == 1 else ~np.all(np.isfinite(x), axis=0)
    if s is not None and s.ndim == 1:
        bad |= ~np.isfinite(s)
    omitted = 0
    if bad.any():
        if nan_policy == "omit":
            keep = ~bad
            omitted = int(bad.sum())
            x = x[keep] if x.ndim == 1 else x[:, keep]
            y = y[keep]
            if s is not None:
                s = s[keep] if s.ndim == 1 else s[np.ix_(keep, keep)]
            if y.shape[0] == 0:
                raise FitInputError("ydata", omitted, "every data point has a NaN or inf; nothing is left to fit.")
        elif nan_policy == "raise" or check_finite:
            raise FitInputError("xdata/ydata/sigma", int(bad.sum()), _nonfinite_message(x, y, s))
    if s is not None:
        check_sigma(s)
    return Data(x, y, s, omitted)


def _nonfinite_message(x, y, s) -> str:
    parts = []
    for name, arr in (("xdata", x), ("ydata", y), ("sigma", s)):
        if arr is None or (name == "sigma" and arr.ndim != 1):
            continue
        flat_bad = ~np.isfinite(arr) if arr.ndim == 1 else ~np.all(np.isfinite(arr), axis=0)
        if flat_bad.any():
            parts.append(f"{name} has {int(flat_bad.sum())} (first at index {int(np.argmax(flat_bad))})")
    return (
        "the data contain NaN or inf values: "
        + "; ".join(parts)
        + ". Clean them, or pass nan_policy='omit' to drop those points."
    )


def check_sigma(s: np.ndarray) -> None:
    """1-D: finite and > 0. 2-D: finite, symmetric, positive definite (Cholesky must succeed)."""
    if s.ndim == 1:
        bad = ~(np.isfinite(s) & (s > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise FitInputError(
                "sigma", float(s[i]), f"sigma must be finite and > 0 everywhere; sigma[{i}] = {float(s[i])!r}."
            )
        return
    if not np.all(np.isfinite(s)):
        raise FitInputError("sigma", s.shape, "the covariance matrix sigma (n, n) contains NaN or inf.")
    if not np.allclose(s, s.T, rtol=1e-10, atol=0.0):
        raise FitInputError("sigma", s.shape, "the covariance matrix sigma (n, n) must be symmetric.")
    try:
        np.linalg.cholesky(s)
    except np.linalg.LinAlgError as exc:
        raise FitInputError(
            "sigma", s.shape, "the covariance matrix sigma (n, n) is not positive definite (Cholesky failed)."
        ) from exc


def check_enough_points(n_points: int, names: Sequence[str]) -> None:
    if n_points < len(names):
        raise FitInputError(
            "ydata",
            n_points,
            f"fewer data points (n={n_points}) than parameters ({len(names)}: {', '.join(names)}); "
            "at least as many points as parameters are needed.",
        )


# -- parameters and bounds --------------------------------------------------------------
def _vector(field: str, value: Any, n: int, names: Sequence[str]) -> np.ndarray:
    arr = _real_array(field, value)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise FitInputError(
            field,
            arr.shape,
            f"{field} must be a scalar or have one entry per parameter ({n}: {', '.join(names)}); "
            f"got shape {arr.shape}.",
        )
    return arr.copy()


def check_bounds(bounds: Any, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``bounds`` as (lower, upper) arrays of length ``len(names)``.

    Accepted forms: a ``(lower, upper)`` pair of scalars or sequences (SciPy), an object
    with ``lb``/``ub`` (``scipy.optimize.Bounds``), or a dict ``{name: (lower, upper)}``
    where parameters not named stay unbounded.
    """
    n = len(names)
    if isinstance(bounds, dict):
        unknown = sorted(set(bounds) - set(names))
        if unknown:
            raise FitInputError(
                "bounds", unknown, f"bounds names unknown parameters {unknown}; the parameters are {list(names)}."
            )
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        for i, name in enumerate(names):
            if name in bounds:
                pair = bounds[name]
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                    raise FitInputError("bounds", pair, f"bounds[{name!r}] must be a (lower, upper) pair.")
                lo[i], hi[i] = float(pair[0]), float(pair[1])
    elif hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        lo, hi = _vector("bounds.lb", bounds.lb, n, names), _vector("bounds.ub", bounds.ub, n, names)
    else:
        if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
            raise FitInputError(
                "bounds",
                bounds,
                f"bounds must be a (lower, upper) pair; got {short(bounds)}. Each side is a scalar or has one "
                f"entry per parameter ({n}: {', '.join(names)}).",
            )
        lo, hi = _vector("bounds[0] (lower)", bounds[0], n, names), _vector("bounds[1] (upper)", bounds[1], n, names)
    for side, arr in (("lower", lo), ("upper", hi)):
        if np.isnan(arr).any():
            i = int(np.argmax(np.isnan(arr)))
            raise FitInputError("bounds", arr.tolist(), f"the {side} bound of parameter '{names[i]}' is NaN.")
    bad = lo >= hi
    if bad.any():
        i = int(np.argmax(bad))
        raise FitInputError(
            "bounds",
            (float(lo[i]), float(hi[i])),
            f"the lower bound of parameter '{names[i]}' ({float(lo[i])!r}) must be strictly less than its upper bound "
            f"({float(hi[i])!r}).",
        )
    return lo, hi


def feasible_start(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """A default start inside the bounds: the midpoint when both are finite, one unit
    inside a single finite bound, and 1 when unbounded (SciPy's choice for p0=None)."""
    lo_f, hi_f = np.isfinite(lower), np.isfinite(upper)
    p = np.ones_like(lower)
    both = lo_f & hi_f
    p[both] = 0.5 * (lower[both] + upper[both])
    p[lo_f & ~hi_f] = lower[lo_f & ~hi_f] + 1.0
    p[~lo_f & hi_f] = upper[~lo_f & hi_f] - 1.0
    return p


def into_bounds(p: np.ndarray, lower: np.ndarray, upper: np.ndarray, rstep: float = 1e-10) -> np.ndarray:
    """Move ``p`` strictly inside the bounds (a guess may land on or outside them)."""
    span = np.where(np.isfinite(upper - lower), upper - lower, 1.0)
    eps = rstep * np.maximum(1.0, np.abs(span))
    lo_in = np.where(np.isfinite(lower), lower + eps, -np.inf)
    hi_in = np.where(np.isfinite(upper), upper - eps, np.inf)
    # A tiny interval (span < 2 eps) falls back to its midpoint.
    with np.errstate(invalid="ignore"):  # the midpoint of (-inf, inf) is nan, and unused
        return np.where(lo_in < hi_in, np.clip(p, lo_in, hi_in), 0.5 * (lower + upper))


class Interior:
    """:func:`into_bounds` for fixed bounds, with everything that depends only on them
    computed once (a repeated fit moves each new start inside the same bounds)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, rstep: float = 1e-10):
        span = np.where(np.isfinite(upper - lower), upper - lower, 1.0)
        eps = rstep * np.maximum(1.0, np.abs(span))
        self.lo_in = np.where(np.isfinite(lower), lower + eps, -np.inf)
        self.hi_in = np.where(np.isfinite(upper), upper - eps, np.inf)
        self.wide = self.lo_in < self.hi_in
        self.all_wide = bool(self.wide.all())
        with np.errstate(invalid="ignore"):  # the midpoint of (-inf, inf) is nan, and unused
            self.mid = 0.5 * (lower + upper)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """``into_bounds(p, lower, upper)``, the same numbers."""
        clipped = np.clip(p, self.lo_in, self.hi_in)
        return clipped if self.all_wide else np.where(self.wide, clipped, self.mid)


def check_p0(p0: Any, names: Sequence[str], lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """p0 must be finite, have one entry per parameter, and lie within the bounds."""
    if type(p0) is list and all(type(v) is float for v in p0):  # [1.0, 2.0, ...]: what _real_array makes of it
        p = np.array(p0, dtype=np.float64)
    else:
        p = _real_array("p0", p0)
    p = np.atleast_1d(p)
    if p.ndim != 1:
        raise FitInputError(
            "p0",
            p.tolist() if p.size <= 16 else p.shape,
            f"p0 must be a flat sequence with one value per parameter ({', '.join(names)}); got an array of shape "
            f"{p.shape}.",
        )
    if p.shape[0] != len(names):
        raise FitInputError(
            "p0",
            p.tolist() if p.size <= 16 else p.shape,
            f"p0 has {p.size} entries but the model has {len(names)} parameters ({', '.join(names)}).",
        )
    if not np.isfinite(p).all():
        i = int(np.argmax(~np.isfinite(p)))
        raise FitInputError("p0", p.tolist(), f"p0 must be finite; parameter '{names[i]}' is {float(p[i])!r}.")
    if ((p >= lower) & (p <= upper)).all():  # one vector test; the loop below names the culprit
        return p
    for i, name in enumerate(names):
        if p[i] < lower[i] or p[i] > upper[i]:
            side, bound = ("lower", lower[i]) if p[i] < lower[i] else ("upper", upper[i])
            raise FitInputError(
                "p0",
                float(p[i]),
                f"p0 is outside the bounds: parameter '{name}' = {float(p[i])!r} is beyond its {side} bound {float(bound)!r} "
                f"(allowed: {float(lower[i])!r} <= {name} <= {float(upper[i])!r}).",
            )
    return p


# -- solver options ---------------------------------------------------------------------
_EPS = float(np.finfo(np.float64).eps)


def check_tolerance(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise FitTypeError(name, value, f"{name} must be a number; got {short(value)}.") from exc
    if not (math.isfinite(v) and 0.0 <= v < 1.0):
        raise FitInputError(name, value, f"{name}={value!r} is not valid; allowed: 0 <= {name} < 1.")
    return v


def check_tolerances(tols: dict[str, float]) -> dict[str, float]:
    out = {k: check_tolerance(k, v) for k, v in tols.items()}
    if all(v < _EPS for v in out.values()):
        raise FitInputError(
            "ftol/xtol/gtol",
            out,
            f"at least one of ftol, xtol, gtol must exceed machine epsilon ({_EPS:.1e}), or the fit cannot converge.",
        )
    return out


def check_positive_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FitTypeError(name, value, f"{name} must be an integer >= {minimum}; got {short(value)}.")
    if value < minimum:
        raise FitInputError(name, value, f"{name}={value!r} is not valid; allowed: an integer >= {minimum}.")
    return int(value)


def check_loss(loss: Any) -> str:
    return one_of("loss", loss, loss_names())


def check_f_scale(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise FitTypeError("f_scale", value, f"f_scale must be a number > 0; got {short(value)}.") from exc
    if not (math.isfinite(v) and v > 0):
        raise FitInputError("f_scale", value, f"f_scale={value!r} is not valid; allowed: a finite number > 0.")
    return v


def check_x_scale(value: Any, names: Sequence[str]) -> str | tuple[float, ...]:
    if isinstance(value, str):
        return one_of("x_scale", value, ("jac",))
    arr = _vector("x_scale", value, len(names), names)
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise FitInputError("x_scale", arr.tolist(), "x_scale must be 'jac' or finite numbers > 0.")
    return tuple(float(v) for v in arr)


def check_callable_or_none(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise FitTypeError(name, value, f"{name} must be a callable or None; got {type(value).__name__}.")
    return value


def check_checkpoint(value: Any) -> Any:
    if value is None:
        return None
    missing = [m for m in ("save", "load_latest") if not callable(getattr(value, m, None))]
    if missing:
        raise FitTypeError(
            "checkpoint",
            value,
            f"checkpoint must be a CheckpointSink (with save(state, fingerprint=...) and load_latest(fingerprint)); "
            f"{type(value).__name__} lacks {', '.join(missing)}. For a URI use nlsq_tasks.io.CheckpointStore(uri).",
        )
    return value


def check_kwargs(kwargs: dict[str, Any], valid: Sequence[str], where: str) -> None:
    if not kwargs:
        return
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise FitTypeError(
            unknown[0],
            kwargs[unknown[0]],
            f"{where}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"valid keyword arguments: {', '.join(sorted(valid))}.",
        )


# -- the model at p0 --------------------------------------------------------------------
# Models already seen to trace to one value per point, keyed by (model, probe shape, n
# params): tracing is what costs (~1 ms), and repeated fits of one model skip it.
_TRACES_OK: "OrderedDict[Any, None]" = OrderedDict()
_TRACES_OK_MAX = 256
_TRACES_LOCK = threading.Lock()  # fits may run in worker threads (Prefect task runners)


def check_model_at_p0(fn: Callable, x_probe: np.ndarray, p0: np.ndarray, names: Sequence[str]) -> None:
    """Evaluate ``fn`` on a few points at ``p0``: it must trace under JAX, return shape
    ``(m,)`` for ``m`` probe points, and be finite there.

    ``jax.eval_shape`` traces abstractly (no compilation), so a model written with NumPy
    calls that JAX cannot trace is reported here rather than from inside the solver; a
    model that traced correctly once is not traced again for the same shapes.
    """
    import jax
    import jax.numpy as jnp

    m = x_probe.shape[-1]
    p_text = "[" + ", ".join(f"{n}={v:.6g}" for n, v in zip(names, p0)) + "]"
    xj = jnp.asarray(x_probe)
    params = [jnp.asarray(v) for v in p0]

    def raised(exc: Exception) -> ModelEvaluationError:
        hint = ""
        if "Tracer" in type(exc).__name__ or "Tracer" in str(exc)[:300]:
            hint = " The model must be JAX-traceable: use jax.numpy (jnp) instead of numpy (np) inside it."
        return ModelEvaluationError(
            "f", p0.tolist(), f"model raised {type(exc).__name__}: {_first_line(exc)} when evaluated at p0={p_text} "
            f"on the first {m} points.{hint}"
        )

    def check_shape(shape) -> None:
        if tuple(shape) != (m,):
            hint = " (a constant model must return e.g. c * jnp.ones_like(x))" if tuple(shape) in ((), (1,)) else ""
            raise ModelEvaluationError(
                "f",
                tuple(shape),
                f"the model returned shape {tuple(shape)} on {m} points; expected ({m},), one value per point{hint}.",
            )

    try:
        key = (fn, x_probe.shape, len(p0))
        with _TRACES_LOCK:
            known = key in _TRACES_OK
    except TypeError:  # an unhashable callable: no memo
        key, known = None, False
    if not known:
        try:
            shape = jax.eval_shape(lambda *p: fn(xj, *p), *params).shape
        except Exception as exc:
            raise raised(exc) from exc
        check_shape(shape)
        if key is not None:
            with _TRACES_LOCK:
                _TRACES_OK[key] = None
                while len(_TRACES_OK) > _TRACES_OK_MAX:  # bounded: drops the oldest
                    _TRACES_OK.popitem(last=False)
    try:
        out = np.asarray(fn(xj, *params))
    except Exception as exc:
        raise raised(exc) from exc
    check_shape(out.shape)
    if not np.all(np.isfinite(out)):
        i = int(np.argmax(~np.isfinite(out)))
        raise ModelEvaluationError(
            "p0",
            p0.tolist(),
            f"the model is not finite at p0={p_text}: it returned {float(out[i])!r} at point {i}. "
            "Choose a p0 (or bounds) where the model is defined.",
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


FD_JAC_NAMES = ("2-point", "3-point", "cs")


def check_jac_at_p0(fn: Callable, jac: Any, x_probe: np.ndarray, p0: np.ndarray, names: Sequence[str]) -> None:
    """SciPy's ``jac`` argument, honoured by checking it rather than by using it.

    The solver differentiates the model exactly with forward-mode AD, so a finite-difference
    name (``'2-point'``, ``'3-point'``, ``'cs'``) is simply superseded. A callable
    ``jac(x, *params) -> (m, p)`` is evaluated once on the probe points at ``p0`` and compared
    with the AD Jacobian; when they agree the AD Jacobian is used (it is the same matrix),
    when they disagree the call fails, because the model and its ``jac`` contradict each
    other and SciPy would have fitted with the wrong derivatives.
    """
    if isinstance(jac, str):
        one_of("jac", jac, FD_JAC_NAMES + (None,))
        return
    if not callable(jac):
        raise FitTypeError("jac", jac, f"jac must be None, a callable or one of {FD_JAC_NAMES}; got {short(jac)}.")
    import jax
    import jax.numpy as jnp

    xj = jnp.asarray(x_probe)
    m, p = x_probe.shape[-1], len(names)
    try:
        given = np.asarray(jac(x_probe, *p0), dtype=np.float64)
    except Exception as exc:
        raise ModelEvaluationError("jac", p0.tolist(), f"jac raised {type(exc).__name__}: {_first_line(exc)} at p0.") from exc
    if given.shape != (m, p):
        raise ModelEvaluationError(
            "jac", given.shape, f"jac returned shape {given.shape} on {m} points; expected ({m}, {p}) (points x parameters)."
        )
    auto = np.asarray(jax.jacfwd(lambda q: fn(xj, *q))(jnp.asarray(p0)))
    scale = max(float(np.max(np.abs(auto))), 1e-300)
    err = np.abs(given - auto)
    if not np.all(err <= 1e-6 * np.abs(auto) + 1e-8 * scale):
        i, j = np.unravel_index(int(np.argmax(err)), err.shape)
        raise FitInputError(
            "jac",
            float(given[i, j]),
            f"jac disagrees with the model's exact derivative at p0: d f[{i}] / d {names[j]} is {float(given[i, j])!r} "
            f"from jac but {float(auto[i, j])!r} by differentiation. The solver uses exact JAX derivatives of f, so a "
            "correct jac is redundant: pass jac=None.",
        )
