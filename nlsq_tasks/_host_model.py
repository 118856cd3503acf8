"""Models written with NumPy, run on the host inside the compiled solver.

SciPy users write ``a * np.exp(-b * x)``. JAX cannot trace ``np.exp`` of a tracer, so such
a model cannot be differentiated by AD or compiled into the solver's loop. Instead it is
called from inside the compiled loop through :func:`jax.pure_callback`, and its Jacobian
comes from finite differences on the host, as SciPy's ``least_squares`` computes it:

* ``'2-point'`` (the default): :math:`J_{:,j} = (f(p + h_j e_j) - f(p)) / h_j` with
  :math:`h_j = \\sqrt{\\epsilon}\\,\\mathrm{sign}(p_j)\\max(1, |p_j|)`;
* ``'3-point'``: :math:`(f(p + h_j e_j) - f(p - h_j e_j)) / (2 h_j)` with
  :math:`h_j = \\epsilon^{1/3}\\ldots`, one-sided :math:`(-3 f_0 + 4 f_1 - f_2)/(2h)` next to a bound;
* ``'cs'``: the complex step :math:`\\operatorname{Im} f(p + i h e_j) / h` (the model must
  accept complex parameters);
* a callable ``jac(x, *p) -> (n, p)``: the user's own Jacobian.

A step that would leave the bounds is taken to the other side (SciPy's rule), so a model
that is undefined outside them is never evaluated there.

The wrapped function is a :func:`jax.custom_jvp`: the primal value is one host call, and
the solver's forward-mode Jacobian (``jvp`` along each parameter, batched with ``vmap``)
is answered by one host call computing ``f`` and the whole finite-difference ``J`` at once,
then ``J @ t``. Under ``vmap`` over parameter vectors (multi-start, streaming trials) the
host calls run one per vector (``vmap_method="sequential"``): a NumPy model sees exactly
the arguments it was written for.

A model that raises at a trial point returns NaN there, so the trust region rejects that
step and shrinks, as it does for any non-finite model value; the front door has already
evaluated it at ``p0`` and reported any error there.
"""

from __future__ import annotations

import itertools
import logging
import threading
import warnings
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

logger = logging.getLogger("nlsq_tasks")

FD_SCHEMES = ("2-point", "3-point", "cs")
_EPS = float(np.finfo(np.float64).eps)
_REL_STEP = {"2-point": _EPS**0.5, "3-point": _EPS ** (1.0 / 3.0), "cs": _EPS**0.5}

_NOTED = False
_NOTE_LOCK = threading.Lock()


def traces_with_jax(fn: Callable, x, p0: np.ndarray) -> Exception | None:
    """None when ``fn`` traces under JAX on ``x`` at ``p0`` (abstractly: nothing is
    computed), else the exception tracing raised. The front door then evaluates the model
    with NumPy values on the host: if that works the model is a host model (typically it
    calls NumPy on traced values: a TracerArrayConversionError or ConcretizationTypeError),
    and if it fails too, that error is the model's and is reported."""
    import jax
    import jax.numpy as jnp

    xj = jnp.asarray(x) if isinstance(x, np.ndarray) else x  # None or an object f understands
    try:
        jax.eval_shape(lambda *p: fn(xj, *p), *[jnp.asarray(v) for v in p0])
    except Exception as exc:  # classified by the caller, by evaluating on the host
        return exc
    return None


def note_numpy_model(name: str, reason: Exception) -> None:
    """Said once per process: a jnp model would be faster and exact."""
    global _NOTED
    with _NOTE_LOCK:
        first, _NOTED = not _NOTED, True
    if first:
        logger.warning(
            "model %r is not JAX-traceable (%s); it runs on the host through jax.pure_callback with "
            "finite-difference derivatives. Write it with jax.numpy (jnp) for a faster fit with exact derivatives.",
            name, type(reason).__name__,
        )


class HostFunction:
    """``f(x, *p)`` in NumPy, as a JAX-callable model with a finite-difference (or user) Jacobian.

    ``whole`` is None for a pointwise model: it is called on whatever points the solver
    passes. Otherwise ``whole`` holds the user's own ``xdata`` (any object, even None, as
    SciPy passes it straight to ``f``): the model is evaluated on all of it and the solver
    passes point indices, of which the values are picked.
    """

    def __init__(self, f: Callable, n_params: int, n_points: int | None, *, jac: Any = None,
                 lower=None, upper=None, whole: Any = None, is_whole: bool = False):
        self.f = f
        self.n_params = int(n_params)
        self.n_points = n_points
        self.scheme = "2-point" if jac is None or (isinstance(jac, str) and jac not in FD_SCHEMES) else jac
        self.lower = np.full(self.n_params, -np.inf) if lower is None else np.asarray(lower, np.float64)
        self.upper = np.full(self.n_params, np.inf) if upper is None else np.asarray(upper, np.float64)
        self.whole, self.is_whole = whole, bool(is_whole)
        self.__name__ = getattr(f, "__name__", type(f).__name__)
        self._jax_fn = None

    # -- host side ------------------------------------------------------------------------
    def _call(self, x, p: np.ndarray, m: int) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = np.asarray(self.f(x, *p))
        if np.iscomplexobj(out) and not np.iscomplexobj(p):
            out = out.real
        return np.broadcast_to(out, (m,)) if out.ndim == 0 or out.shape == (1,) else out

    def values(self, x, p: np.ndarray) -> np.ndarray:
        """The model on the host at ``p``: all points (whole) or the points of ``x``."""
        if self.is_whole:
            return self._call(self.whole, p, self.n_points).reshape(-1)
        m = np.shape(x)[-1]
        return self._call(x, p, m).reshape(m)

    def jacobian(self, x, p: np.ndarray, f0: np.ndarray) -> np.ndarray:
        """``(m, n_params)``: the user's ``jac`` or finite differences of ``values``."""
        if callable(self.scheme):
            target = self.whole if self.is_whole else x
            return np.asarray(self.scheme(target, *p), dtype=np.float64).reshape(f0.shape[0], self.n_params)
        rel = _REL_STEP[self.scheme]
        h = rel * np.where(p >= 0, 1.0, -1.0) * np.maximum(1.0, np.abs(p))
        J = np.empty((f0.shape[0], self.n_params))
        for j in range(self.n_params):
            if self.scheme == "cs":
                q = p.astype(np.complex128)
                q[j] += 1j * h[j]
                J[:, j] = np.imag(self._complex_values(x, q)) / h[j]
                continue
            lo, hi = self.lower[j], self.upper[j]
            hj = h[j]
            if self.scheme == "2-point":
                if not lo <= p[j] + hj <= hi:
                    hj = -hj
                q = p.copy()
                q[j] = p[j] + hj
                hj = q[j] - p[j]  # the step actually representable
                J[:, j] = (self.values(x, q) - f0) / hj
                continue
            central = lo <= p[j] - abs(hj) and p[j] + abs(hj) <= hi
            if central:
                qp, qm = p.copy(), p.copy()
                qp[j], qm[j] = p[j] + hj, p[j] - hj
                J[:, j] = (self.values(x, qp) - self.values(x, qm)) / (qp[j] - qm[j])
            else:  # one-sided, second order, towards the feasible side
                if not lo <= p[j] + 2 * hj <= hi:
                    hj = -hj
                q1, q2 = p.copy(), p.copy()
                q1[j], q2[j] = p[j] + hj, p[j] + 2 * hj
                J[:, j] = (-3.0 * f0 + 4.0 * self.values(x, q1) - self.values(x, q2)) / (2.0 * hj)
        return J

    def _complex_values(self, x, q: np.ndarray) -> np.ndarray:
        target = self.whole if self.is_whole else x
        m = self.n_points if self.is_whole else np.shape(x)[-1]
        with np.errstate(all="ignore"):
            out = np.asarray(self.f(target, *q))
        return np.broadcast_to(out, (m,)) if out.ndim == 0 else out.reshape(-1)

    def _pick(self, values: np.ndarray, index) -> np.ndarray:
        return values[np.asarray(index).astype(np.int64)] if self.is_whole else values

    def host_values(self, x, p) -> np.ndarray:
        x, p = np.asarray(x), np.asarray(p, np.float64)
        try:
            return self._pick(self.values(x, p), x).astype(np.float64)
        except Exception as exc:  # a trial point where the model fails: NaN rejects the step
            logger.debug("host model raised %s at %s; NaN returned", exc, p)
            return np.full(np.shape(x)[-1], np.nan)

    def host_values_and_jacobian(self, x, p) -> tuple[np.ndarray, np.ndarray]:
        x, p = np.asarray(x), np.asarray(p, np.float64)
        try:
            f0 = self.values(x, p).astype(np.float64)
            J = self.jacobian(x, p, f0)
            return self._pick(f0, x), (J[np.asarray(x).astype(np.int64)] if self.is_whole else J)
        except Exception as exc:
            logger.debug("host model or its Jacobian raised %s at %s; NaN returned", exc, p)
            m = np.shape(x)[-1]
            return np.full(m, np.nan), np.full((m, self.n_params), np.nan)

    # -- JAX side -------------------------------------------------------------------------
    def _build(self):
        import jax
        import jax.numpy as jnp

        host = self

        @jax.custom_jvp
        def evaluate(x, p):
            m = x.shape[-1]
            return jax.pure_callback(host.host_values, jax.ShapeDtypeStruct((m,), jnp.float64), x, p,
                                     vmap_method="sequential")

        @evaluate.defjvp
        def evaluate_jvp(primals, tangents):
            x, p = primals
            _, tp = tangents  # x is data: its tangent is ignored
            m = x.shape[-1]
            f, J = jax.pure_callback(
                host.host_values_and_jacobian,
                (jax.ShapeDtypeStruct((m,), jnp.float64), jax.ShapeDtypeStruct((m, host.n_params), jnp.float64)),
                x, p, vmap_method="sequential",
            )
            return f, J @ tp

        return evaluate

    def __call__(self, x, *params):
        import jax.numpy as jnp

        if self._jax_fn is None:
            self._jax_fn = self._build()
        x = jnp.asarray(x, jnp.float64)
        p = jnp.stack([jnp.asarray(v, jnp.float64) for v in params])
        return self._jax_fn(x, p)

    def __repr__(self) -> str:
        kind = "callable jac" if callable(self.scheme) else self.scheme
        return f"HostFunction({self.__name__}, {self.n_params} params, {kind}{', whole x' if self.is_whole else ''})"


# One HostFunction per (f, n_params, jac, bounds): the solver's compile cache is keyed on
# the model function, so a repeated fit of the same NumPy model reuses its compiled loop.
_HOSTS: "OrderedDict[Any, HostFunction]" = OrderedDict()
_HOSTS_MAX = 64
_HOSTS_LOCK = threading.Lock()


def host_function(f: Callable, n_params: int, *, jac: Any = None, lower=None, upper=None) -> HostFunction:
    """The (cached) pointwise :class:`HostFunction` of ``f``."""
    lo = None if lower is None else tuple(np.asarray(lower, np.float64).tolist())
    hi = None if upper is None else tuple(np.asarray(upper, np.float64).tolist())
    key = (f, int(n_params), jac, lo, hi)
    try:
        hash(key)
    except TypeError:  # unhashable f or jac: not cached
        return HostFunction(f, n_params, None, jac=jac, lower=lower, upper=upper)
    with _HOSTS_LOCK:
        host = _HOSTS.get(key)
        if host is None:
            host = _HOSTS[key] = HostFunction(f, n_params, None, jac=jac, lower=lower, upper=upper)
            while len(_HOSTS) > _HOSTS_MAX:  # bounded: drops the oldest
                _HOSTS.popitem(last=False)
        else:
            _HOSTS.move_to_end(key)
    return host


# -- one compiled solver for every host model ----------------------------------------------
# The solver's compile cache is keyed on the model function. A HostFunction is a new
# function per NumPy model, so every new model (every lambda in a loop) would compile the
# whole solver again (seconds). For in-memory fits the front door instead registers the
# HostFunction under an integer handle and passes the handle as one extra row of x; the
# model the solver sees is the HostDispatch of its parameter count, the same object for
# every NumPy model, so they all share one compiled solver per data shape.
_REGISTRY: "OrderedDict[int, HostFunction]" = OrderedDict()
_REGISTRY_MAX = 4096
_HANDLES = itertools.count(1)


def register(host: HostFunction) -> int:
    """The handle of ``host`` (registered once; the registry keeps the newest 4096)."""
    with _HOSTS_LOCK:
        handle = getattr(host, "handle", None)
        if handle is None or handle not in _REGISTRY:
            handle = host.handle = next(_HANDLES)
        _REGISTRY[handle] = host
        _REGISTRY.move_to_end(handle)
        while len(_REGISTRY) > _REGISTRY_MAX:  # bounded: drops the oldest
            _REGISTRY.popitem(last=False)
    return handle


def _lookup(xh) -> tuple[HostFunction, np.ndarray]:
    xh = np.asarray(xh)
    with _HOSTS_LOCK:
        host = _REGISTRY[int(xh[-1, 0])]
    x = xh[:-1]
    return host, (x[0] if x.shape[0] == 1 else x)


def _dispatch_values(xh, p):
    try:
        host, x = _lookup(xh)
    except (KeyError, IndexError):  # no handle row: cannot happen through the front door
        return np.full(np.shape(xh)[-1], np.nan)
    return host.host_values(x, p)


def _dispatch_values_and_jacobian(xh, p):
    try:
        host, x = _lookup(xh)
    except (KeyError, IndexError):
        m = np.shape(xh)[-1]
        return np.full(m, np.nan), np.full((m, np.shape(p)[-1]), np.nan)
    return host.host_values_and_jacobian(x, p)


class HostDispatch:
    """The JAX side of every registered host model with ``n_params`` parameters: called as
    ``fn(xh, *params)`` where the last row of ``xh`` holds the model's handle."""

    def __init__(self, n_params: int):
        self.n_params = int(n_params)
        self.__name__ = f"host_model_{n_params}"
        self._jax_fn = None

    def _build(self):
        import jax
        import jax.numpy as jnp

        n_params = self.n_params

        @jax.custom_jvp
        def evaluate(xh, p):
            return jax.pure_callback(_dispatch_values, jax.ShapeDtypeStruct(xh.shape[-1:], jnp.float64), xh, p,
                                     vmap_method="sequential")

        @evaluate.defjvp
        def evaluate_jvp(primals, tangents):
            xh, p = primals
            _, tp = tangents
            m = xh.shape[-1]
            f, J = jax.pure_callback(
                _dispatch_values_and_jacobian,
                (jax.ShapeDtypeStruct((m,), jnp.float64), jax.ShapeDtypeStruct((m, n_params), jnp.float64)),
                xh, p, vmap_method="sequential",
            )
            return f, J @ tp

        return evaluate

    def __call__(self, xh, *params):
        import jax.numpy as jnp

        if self._jax_fn is None:
            self._jax_fn = self._build()
        p = jnp.stack([jnp.asarray(v, jnp.float64) for v in params])
        return self._jax_fn(jnp.asarray(xh, jnp.float64), p)

    def __repr__(self) -> str:
        return f"HostDispatch({self.n_params} params)"


_DISPATCH: dict[int, HostDispatch] = {}


def dispatcher(n_params: int) -> HostDispatch:
    with _HOSTS_LOCK:
        d = _DISPATCH.get(int(n_params))
        if d is None:
            d = _DISPATCH[int(n_params)] = HostDispatch(n_params)
        return d


def with_handle_row(x: np.ndarray, handle: int) -> np.ndarray:
    """``x`` (``(n,)`` or ``(k, n)``) with the handle appended as its last row."""
    x2 = x[None, :] if x.ndim == 1 else x
    return np.concatenate([np.asarray(x2, np.float64), np.full((1, x2.shape[-1]), float(handle))], axis=0)


def check_host_model(host: HostFunction, x, p0: np.ndarray, names, n_points: int) -> np.ndarray:
    """Evaluate the NumPy model once on the whole data at ``p0`` (and its Jacobian once);
    raise a ModelEvaluationError naming what went wrong. Returns the values."""
    from . import _validate as V

    p_text = "[" + ", ".join(f"{n}={v:.6g}" for n, v in zip(names, p0)) + "]"
    target = host.whole if host.is_whole else x
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = np.asarray(host.f(target, *p0))
    except Exception as exc:
        raise V.ModelEvaluationError(
            "f", p0.tolist(), f"model raised {type(exc).__name__}: {V._first_line(exc)} when evaluated at p0={p_text} "
            f"on the data ({n_points} points)."
        ) from exc
    if np.iscomplexobj(out) or not (np.issubdtype(out.dtype, np.number) or out.dtype == bool):
        raise V.ModelEvaluationError("f", str(out.dtype), f"the model returned dtype {out.dtype}; expected real numbers.")
    if out.ndim == 0 or out.shape == (1,):
        out = np.broadcast_to(out, (n_points,))
    if out.shape != (n_points,):
        raise V.ModelEvaluationError(
            "f", out.shape, f"the model returned shape {out.shape} on {n_points} points; expected ({n_points},), "
            "one value per point.",
        )
    out = out.astype(np.float64)
    if not np.all(np.isfinite(out)):
        i = int(np.argmax(~np.isfinite(out)))
        raise V.ModelEvaluationError(
            "p0", p0.tolist(), f"the model is not finite at p0={p_text}: it returned {float(out[i])!r} at point {i}. "
            "Choose a p0 (or bounds) where the model is defined.",
        )
    if callable(host.scheme):
        try:
            J = np.asarray(host.scheme(target, *p0), dtype=np.float64)
        except Exception as exc:
            raise V.ModelEvaluationError("jac", p0.tolist(), f"jac raised {type(exc).__name__}: {V._first_line(exc)} at p0.") from exc
        if J.shape != (n_points, len(names)):
            raise V.ModelEvaluationError(
                "jac", J.shape, f"jac returned shape {J.shape} on {n_points} points; expected ({n_points}, {len(names)}) "
                "(points x parameters).",
            )
    elif host.scheme == "cs":
        try:
            host._complex_values(x, p0.astype(np.complex128) + 1e-20j)
        except Exception as exc:
            raise V.FitInputError(
                "jac", "cs", f"jac='cs' needs a model that accepts complex parameters; it raised {type(exc).__name__}: "
                f"{V._first_line(exc)}. Use jac='2-point' or '3-point'.",
            ) from exc
    return out
