"""Fixed parameters: held at a value, left out of the fit, reported as fixed.

``fit(f, x, y, fixed={"c": 0.3})`` and equal lower and upper bounds (``bounds={"c": (0.3,
0.3)}``, or ``lower[i] == upper[i]``) both hold a parameter at its value, as lmfit's
``vary=False`` does (SciPy refuses equal bounds). The fit then runs on the *reduced*
model of the free parameters only,

.. math:: g(x; q) = f(x; p(q)),\\qquad p_i = \\begin{cases} c_i & i \\text{ fixed} \\\\ q_{k(i)} & \\text{otherwise,} \\end{cases}

so the solver, the strategies, multi-start and the validation pass see an ordinary,
smaller problem (the degrees of freedom count free parameters only). The result is then
expanded back to every parameter: ``popt`` holds the fixed values, the fixed rows and
columns of ``pcov`` are 0 (their value is known exactly: lmfit reports no error for
them), and ``FitResult.fixed`` names them, which ``summary()`` and ``report()`` show.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from . import _validate as V


def _pair(bounds) -> tuple[Any, Any] | None:
    if isinstance(bounds, dict):
        return None
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        return bounds.lb, bounds.ub
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return bounds[0], bounds[1]
    return None


def may_fix(bounds, fixed) -> bool:
    """Cheap: could this call fix a parameter? (No model is resolved for ordinary fits.)"""
    if fixed is not None:
        return True
    if isinstance(bounds, dict):
        return any(isinstance(v, (tuple, list)) and len(v) == 2 and _num(v[0]) == _num(v[1]) for v in bounds.values())
    pair = _pair(bounds)
    if pair is None:
        return False
    if type(pair[0]) in (float, int) and type(pair[1]) in (float, int):  # scalar bounds (curve_fit's default)
        return pair[0] == pair[1]
    try:
        with np.errstate(invalid="ignore"):
            return bool(np.any(np.asarray(pair[0], dtype=np.float64) == np.asarray(pair[1], dtype=np.float64)))
    except (TypeError, ValueError):
        return False  # malformed bounds: the front door reports them


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return object()


class Reduction:
    """The reduced problem: ``model`` of the free parameters, its ``p0`` and ``bounds``;
    :meth:`expand` turns the reduced :class:`FitResult` into one over every parameter."""

    def __init__(self, model, names: Sequence[str], values: dict[str, float], lower: np.ndarray, upper: np.ndarray,
                 p0: np.ndarray | None):
        self.names = list(names)
        self.values = dict(values)
        self.free = [i for i, n in enumerate(self.names) if n not in self.values]
        free = np.asarray(self.free)
        self.full_lower, self.full_upper = lower.copy(), upper.copy()
        self.model = _reduced_model(model, self.names, self.values, lower, upper)
        self.bounds = (lower[free], upper[free])
        self.p0 = None if p0 is None else p0[free]


    def reduce_jac(self, jac):
        """A callable ``jac(x, *p) -> (n, p)`` of every parameter as one of the free ones."""
        if not callable(jac):
            return jac
        free = np.asarray(self.free)
        full = np.array([self.values.get(n, np.nan) for n in self.names], dtype=np.float64)

        def reduced_jac(x, *q):
            p = full.copy()
            p[free] = q
            return np.asarray(jac(x, *p))[:, free]

        return reduced_jac

    def expand(self, result):
        """The reduced result over every parameter (fixed ones at their value, pcov 0)."""
        n = len(self.names)
        free = np.asarray(self.free)
        popt = np.array([self.values.get(name, np.nan) for name in self.names], dtype=np.float64)
        popt[free] = np.asarray(result.popt)
        pcov = np.zeros((n, n))
        pcov[np.ix_(free, free)] = np.asarray(result.pcov)
        result.popt, result.pcov = popt, pcov
        result.param_names = list(self.names)
        result.lower, result.upper = self.full_lower, self.full_upper
        result.fixed = [name for name in self.names if name in self.values]
        return result


# Reduced models by (model, fixed values, bounds): the solver's compile cache is keyed on
# the model function, so a repeated fit with the same parameters fixed reuses its compiled loop.
_REDUCED: "OrderedDict[Any, Any]" = OrderedDict()
_REDUCED_MAX = 64
_REDUCED_LOCK = threading.Lock()


def _reduced_model(model, names, values, lower, upper):
    from .models.base import Model

    fn = model.fn if hasattr(model, "fn") else model
    ident = model.fingerprint() if callable(getattr(model, "fingerprint", None)) else repr(model)
    key = (fn, ident, tuple(names), tuple(sorted(values.items())), tuple(lower.tolist()), tuple(upper.tolist()))
    try:
        with _REDUCED_LOCK:
            hit = _REDUCED.get(key)
    except TypeError:  # an unhashable model function: not cached
        key, hit = None, None
    if hit is not None:
        return hit
    self_names = list(names)
    free = np.asarray([i for i, n in enumerate(self_names) if n not in values])
    full = np.array([values.get(n, np.nan) for n in self_names], dtype=np.float64)
    n_all = len(self_names)

    def reduced(x, *q):
        p = [full[i] for i in range(n_all)]
        for k, i in enumerate(free):
            p[i] = q[k]
        return fn(x, *p)

    reduced.__name__ = getattr(fn, "__name__", "model")
    guess = getattr(model, "guess", None)

    def reduced_guess(x, y):
        g = guess(x, y) if callable(guess) else None
        return None if g is None else np.asarray(g, dtype=np.float64)[free]

    fixed_text = ",".join(f"{n}={v!r}" for n, v in sorted(values.items()))
    out = Model(reduced, [self_names[i] for i in free], getattr(model, "name", reduced.__name__),
                guess=reduced_guess if callable(guess) else None, bounds=(lower[free], upper[free]),
                identity=f"{ident}|fixed:{fixed_text}")
    if key is not None:
        with _REDUCED_LOCK:
            _REDUCED[key] = out
            while len(_REDUCED) > _REDUCED_MAX:  # bounded: drops the oldest
                _REDUCED.popitem(last=False)
    return out


def split_fixed(f, p0, bounds, fixed, *, model_bounds: bool, unbounded) -> Reduction | None:
    """A :class:`Reduction` when ``fixed`` or equal bounds hold any parameter, else None."""
    if not may_fix(bounds, fixed):
        return None
    from ._plan import resolve_model_spec

    model = resolve_model_spec(f, p0)
    names = list(model.param_names)
    if bounds is unbounded and model_bounds and callable(getattr(model, "default_bounds", None)):
        lower, upper = (np.asarray(b, dtype=np.float64) for b in model.default_bounds())
    else:
        lower, upper = _bounds(bounds, names)
    values: dict[str, float] = {}
    for i, name in enumerate(names):
        if lower[i] == upper[i]:
            values[name] = float(lower[i])
    for name, value in _fixed(fixed, names, p0).items():
        i = names.index(name)
        if not lower[i] <= value <= upper[i]:
            raise V.FitInputError("fixed", {name: value}, f"fixed value {name}={value!r} is outside its bounds "
                                  f"[{lower[i]!r}, {upper[i]!r}].")
        values[name] = value
    if not values:
        return None
    if len(values) == len(names):
        raise V.FitInputError("fixed", values, f"every parameter ({', '.join(names)}) is fixed; at least one must vary.")
    p = None
    if p0 is not None:
        p = np.atleast_1d(np.asarray(p0, dtype=np.float64)).ravel()
        if p.shape != (len(names),):
            raise V.FitInputError("p0", p.tolist(), f"p0 has {p.size} entries but the model has {len(names)} "
                                  f"parameters ({', '.join(names)}).")
    return Reduction(model, names, values, lower, upper, p)


def _fixed(fixed, names, p0) -> dict[str, float]:
    """``fixed`` as ``{name: value}``: a dict of values, or names (held at their ``p0``)."""
    if fixed is None:
        return {}
    if isinstance(fixed, str):
        fixed = [fixed]
    if not isinstance(fixed, dict):
        try:
            fixed = list(fixed)
        except TypeError:
            raise V.FitTypeError("fixed", fixed, "fixed must be a dict {name: value} or a list of names "
                                 f"(held at their p0); got {V.short(fixed)}.") from None
        if p0 is None:
            raise V.FitInputError("fixed", fixed, "fixed given as names holds them at their p0, but no p0 was "
                                  "given; pass fixed={name: value}.")
        p = np.atleast_1d(np.asarray(p0, dtype=np.float64)).ravel()
        fixed = {n: (p[names.index(n)] if n in names and p.size == len(names) else None) for n in fixed}
    unknown = [k for k in fixed if k not in names]
    if unknown:
        raise V.FitInputError("fixed", unknown, f"fixed names unknown parameter(s) {unknown}; the parameters are {names}.")
    out = {}
    for name, value in fixed.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise V.FitTypeError("fixed", {name: value}, f"fixed[{name!r}] must be a number; got {V.short(value)}.") from None
        if not np.isfinite(v):
            raise V.FitInputError("fixed", {name: value}, f"fixed[{name!r}] must be finite; got {v!r}.")
        out[name] = v
    return out


def _bounds(bounds, names) -> tuple[np.ndarray, np.ndarray]:
    """Like the front door's bounds check, but equal lower and upper bounds are allowed."""
    n = len(names)
    if isinstance(bounds, dict):
        probe = {k: v for k, v in bounds.items()}
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        for k, pair in probe.items():
            if k not in names:
                raise V.FitInputError("bounds", [k], f"bounds names unknown parameters {[k]}; the parameters are {list(names)}.")
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise V.FitInputError("bounds", pair, f"bounds[{k!r}] must be a (lower, upper) pair.")
            i = names.index(k)
            lo[i], hi[i] = float(pair[0]), float(pair[1])
    else:
        pair = _pair(bounds)
        if pair is None:
            return V.check_bounds(bounds, names)  # reports the malformed bounds
        lo = np.broadcast_to(np.asarray(pair[0], dtype=np.float64), (n,)).copy() if np.ndim(pair[0]) == 0 else None
        hi = np.broadcast_to(np.asarray(pair[1], dtype=np.float64), (n,)).copy() if np.ndim(pair[1]) == 0 else None
        if lo is None:
            lo = np.asarray(pair[0], dtype=np.float64)
        if hi is None:
            hi = np.asarray(pair[1], dtype=np.float64)
        for side, arr in (("lower", lo), ("upper", hi)):
            if arr.shape != (n,):
                raise V.FitInputError("bounds", arr.shape, f"the {side} bounds must be a scalar or have one entry per "
                                      f"parameter ({n}: {', '.join(names)}); got shape {arr.shape}.")
    bad = np.isnan(lo) | np.isnan(hi) | (lo > hi)
    if bad.any():
        i = int(np.argmax(bad))
        raise V.FitInputError("bounds", (float(lo[i]), float(hi[i])), f"the lower bound of parameter '{names[i]}' "
                              f"({float(lo[i])!r}) must not exceed its upper bound ({float(hi[i])!r}).")
    return lo, hi
