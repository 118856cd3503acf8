"""The model as the solver will run it, decided once at the front door.

:func:`prepare_model` is the front door's last check. It evaluates the model once on the
whole data at ``p0`` and decides how it runs:

1. **JAX or NumPy.** A model that traces under JAX runs compiled with exact forward-mode
   derivatives. One whose tracing fails because it calls NumPy on traced values (``np.exp``,
   in-place assignment, ``float(p)``...) runs on the host through :mod:`._host_model`, with a
   finite-difference Jacobian (or the caller's ``jac``) and a one-time note.
2. **Pointwise or whole.** The solvers evaluate the model on tiles, chunks and padded
   copies of ``x``, which is right only when point ``i``'s value depends on ``x[i]`` alone.
   SciPy calls ``f`` on all of ``xdata`` at once, so some models are not pointwise: one that
   closes over a full-length array (``a * x - target``), mixes points (``R @ f``) or
   normalises by a global (``x / x.max()``). Such a model is found by comparing its values
   on a strict prefix of ``x`` with those on the whole ``x``, and then runs *whole*: the
   solver passes point indices and the model, evaluated on all of ``x``, is picked at
   them (the covariance whitening does the same). Each chunk then costs one evaluation on
   all points, so a note says so.

The whole-``x`` evaluation is concrete up to :data:`FULL_CHECK_POINTS` points; above, it
is abstract (``jax.eval_shape``, no computation) and values are checked on a prefix.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from . import _validate as V
from ._host_model import (
    HostFunction,
    check_host_model,
    dispatcher,
    host_function,
    note_numpy_model,
    register,
    traces_with_jax,
    with_handle_row,
)

logger = logging.getLogger("nlsq_tasks")

FULL_CHECK_POINTS = 1 << 20  # concrete whole-x evaluation up to this many points (~ms)
PREFIX_POINTS = 8  # the strict prefix the pointwise test compares on


def _prefix(x: np.ndarray, m: int) -> np.ndarray:
    return x[:m] if x.ndim == 1 else x[..., :m]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return bool(np.all(np.abs(a - b) <= 1e-9 * np.abs(b) + 1e-12 * scale))


def _with_fn(model, fn, **flags):
    out = copy.copy(model)
    out.fn = fn
    for k, v in flags.items():
        setattr(out, k, v)
    return out


def is_whole(model) -> bool:
    """True when the solver must pass point indices instead of ``x`` (see the module doc)."""
    return bool(getattr(model, "whole_data", False))


def engine_data(model, data: "V.Data") -> "V.Data":
    """The data as the solver takes them: indices in place of ``x`` for a whole model, and
    a dispatched host model's handle as an extra row of ``x``."""
    x = np.arange(data.n_points, dtype=np.float64) if is_whole(model) else data.x
    handle = getattr(model, "host_handle", None)
    if handle is not None:
        x = with_handle_row(x, handle)
    if x is data.x:
        return data
    return V.Data(x, data.y, data.sigma, data.omitted)


def prepare_model(model, x: np.ndarray, p0: np.ndarray, names: Sequence[str], *, n_points: int, jac: Any = None,
                  lower=None, upper=None):
    """The model as the solver runs it (see the module doc); raises ModelEvaluationError when
    it cannot be evaluated at ``p0``. ``x`` is the whole data, or a sample of a source
    (``x.shape[-1] < n_points``), where a model must be pointwise."""
    fn = model.fn if hasattr(model, "fn") else model
    sampled = x.shape[-1] < n_points
    if isinstance(fn, HostFunction):  # already host-wrapped (curve_fit with xdata=None)
        return model if sampled else _dispatched(model, fn)
    key = _key(fn, x, p0)
    if key is not None and _SEEN.get(key) is True:  # a traceable, pointwise model seen before on this shape
        V.check_model_at_p0(fn, x if x.shape[-1] <= FULL_CHECK_POINTS else _prefix(x, PREFIX_POINTS), p0, names)
        if jac is not None:
            V.check_jac_at_p0(fn, jac, _prefix(x, PREFIX_POINTS), p0, names)
        return model
    failure = traces_with_jax(fn, x if x.shape[-1] <= FULL_CHECK_POINTS else _prefix(x, PREFIX_POINTS), p0)
    if failure is not None:
        return _host(model, fn, failure, x, p0, names, jac=jac, lower=lower, upper=upper, sampled=sampled)
    out = _traced(model, fn, x, p0, names, jac=jac, sampled=sampled)
    if key is not None and out is model:
        _remember(key)
    return out


# Traceable, pointwise models already checked, keyed by (model, x shape, n params): the
# trace and the pointwise comparison are what cost; a repeated fit only re-evaluates.
_SEEN: "OrderedDict[Any, bool]" = OrderedDict()
_SEEN_MAX = 256
_SEEN_LOCK = threading.Lock()


def _key(fn, x, p0):
    key = (fn, x.shape, len(p0))
    try:
        hash(key)
    except TypeError:  # an unhashable callable: no memo
        return None
    return key


def _remember(key) -> None:
    with _SEEN_LOCK:
        _SEEN[key] = True
        while len(_SEEN) > _SEEN_MAX:  # bounded: drops the oldest
            _SEEN.popitem(last=False)


def _host(model, fn, failure, x, p0, names, *, jac, lower, upper, sampled):
    host = host_function(fn, len(names), jac=jac, lower=lower, upper=upper)
    values = check_host_model(host, x, p0, names, x.shape[-1])
    note_numpy_model(getattr(model, "name", host.__name__), failure)
    if not _pointwise_host(host, x, p0, values):
        if sampled:
            raise _not_pointwise(names)
        whole = HostFunction(fn, len(names), x.shape[-1], jac=jac, lower=lower, upper=upper, whole=x, is_whole=True)
        _note_whole()
        return _dispatched(_with_fn(model, whole, whole_data=True), whole)
    return _with_fn(model, host, host_model=True) if sampled else _dispatched(model, host)


def _dispatched(model, host: HostFunction):
    """In-memory fits: the shared HostDispatch, with the model's handle as an extra row of x
    (see _host_model: every NumPy model then shares one compiled solver)."""
    return _with_fn(model, dispatcher(host.n_params), host_model=True, host_handle=register(host))


def _pointwise_host(host: HostFunction, x, p0, values) -> bool:
    n = x.shape[-1]
    if n < 2:
        return True
    m = min(PREFIX_POINTS, n - 1)
    try:
        with np.errstate(all="ignore"):
            part = host.values(_prefix(x, m), p0)
    except Exception:
        return False
    return _same(part, values[:m])


def _traced(model, fn, x, p0, names, *, jac, sampled):
    import jax
    import jax.numpy as jnp

    n = x.shape[-1]
    if n <= FULL_CHECK_POINTS:
        V.check_model_at_p0(fn, x, p0, names)
        pointwise = _pointwise_traced(fn, x, p0)
    else:
        try:
            shape = jax.eval_shape(lambda *p: fn(jnp.asarray(x), *p), *[jnp.asarray(v) for v in p0]).shape
        except Exception as exc:
            raise V.ModelEvaluationError("f", p0.tolist(), f"model raised {type(exc).__name__}: {V._first_line(exc)} "
                                         f"when traced on the whole x ({n} points).") from exc
        if tuple(shape) != (n,):
            raise V.ModelEvaluationError("f", tuple(shape), f"the model returned shape {tuple(shape)} on {n} points; "
                                         f"expected ({n},), one value per point.")
        try:  # values on a prefix; a model that fails there is not pointwise
            V.check_model_at_p0(fn, _prefix(x, PREFIX_POINTS), p0, names)
            pointwise = True
        except V.ModelEvaluationError as exc:
            if exc.field == "p0":
                raise
            pointwise = False
    if jac is not None:
        V.check_jac_at_p0(fn, jac, x if not pointwise or n <= PREFIX_POINTS else _prefix(x, PREFIX_POINTS), p0, names)
    if pointwise:
        return model
    if sampled:
        raise _not_pointwise(names)
    _note_whole()
    xj = jnp.asarray(x)

    def whole_fn(index, *p):
        values = jnp.broadcast_to(fn(xj, *p), (n,))
        return values[jnp.asarray(index).astype(jnp.int32)]

    whole_fn.__name__ = getattr(fn, "__name__", "model")
    return _with_fn(model, whole_fn, whole_data=True)


def _pointwise_traced(fn, x, p0) -> bool:
    import jax.numpy as jnp

    n = x.shape[-1]
    if n < 2:
        return True
    m = min(PREFIX_POINTS, n - 1)
    params = [jnp.asarray(v) for v in p0]
    try:
        full = np.asarray(jnp.broadcast_to(fn(jnp.asarray(x), *params), (n,)))
        part = np.asarray(jnp.broadcast_to(fn(jnp.asarray(_prefix(x, m)), *params), (m,)))
    except Exception:
        return False
    return _same(part, full[:m])


def _not_pointwise(names) -> V.ModelEvaluationError:
    return V.ModelEvaluationError(
        "f", list(names), "the model is not pointwise (its value at a point depends on other points or on a "
        "full-length array it closes over), and fit_source evaluates it chunk by chunk. Load the data and use fit(), "
        "or write the model so that f(x[i]) depends on x[i] only.",
    )


def _note_whole() -> None:
    logger.info("the model is not pointwise (it closes over full-length data, mixes points or uses a global of x): "
                "every tile evaluates it on all points and picks its own")


def whole_data_model(model, xdata: Any, n_points: int, p0: np.ndarray, names: Sequence[str], *, jac=None,
                     lower=None, upper=None):
    """A model for SciPy's non-array ``xdata`` (``None`` or any object ``f`` understands,
    passed to it unchanged as SciPy does): ``f(xdata, *p)`` is evaluated whole and the
    solver passes point indices."""
    fn = model.fn if hasattr(model, "fn") else model
    host = HostFunction(fn, len(names), n_points, jac=jac, lower=lower, upper=upper, whole=xdata, is_whole=True)
    check_host_model(host, None, p0, names, n_points)
    failure = traces_with_jax(fn, xdata, p0)
    if failure is not None:
        note_numpy_model(getattr(model, "name", host.__name__), failure)
        return _with_fn(model, host, whole_data=True, host_model=True)
    import jax.numpy as jnp

    def whole_fn(index, *p):
        return jnp.broadcast_to(fn(xdata, *p), (n_points,))[jnp.asarray(index).astype(jnp.int32)]

    whole_fn.__name__ = getattr(fn, "__name__", "model")
    return _with_fn(model, whole_fn, whole_data=True)
