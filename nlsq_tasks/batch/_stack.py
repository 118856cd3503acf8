"""Many data sets as one padded stack: the data layout of a batched fit.

A batch of ``K`` data sets, given as a ``(K, n)`` stack or as ragged lists, becomes

- ``x``: ``(K, L)`` (or ``(K, k, L)`` for ``k`` features), ``y`` and ``sigma``: ``(K, L)``;
- ``n_valid``: ``(K,)``, the number of real points of each set, which come first.

``L`` is a size bucket of the longest set (:func:`~nlsq_tasks.engine.strategies.standard_layout`,
the layout a single fit of that size uses), so batches of nearby lengths share one compiled
solver. Padding repeats each set's last real point and is masked out of every sum by the
data pass (``index < n_valid``), exactly as a single fit pads. With ``nan_policy='omit'``
the non-finite points of a set are dropped first and the remaining ones moved to the front.

Per-set problems (a set left with fewer points than parameters, every point NaN) are
reported, not raised, when ``invalid="skip"``: the set keeps one dummy point and its row
carries the error (a batch flow must not lose 9 999 fits to one bad file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import _validate as V
from ..engine.strategies import standard_layout


@dataclass
class Stack:
    """Validated, padded data of ``K`` sets (host arrays, float64)."""

    x: np.ndarray  # (K, L) or (K, k, L)
    y: np.ndarray  # (K, L)
    sigma: np.ndarray | None  # (K, L) or None
    n_valid: np.ndarray  # (K,) int64
    tile: int
    omitted: np.ndarray  # (K,) points dropped by nan_policy='omit'
    errors: dict[int, str] = field(default_factory=dict)  # set index -> why it cannot be fitted

    @property
    def n_sets(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_features(self) -> int:
        return 1 if self.x.ndim == 2 else int(self.x.shape[1])

    def set_xy(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The real points of set ``i`` (no padding)."""
        n = int(self.n_valid[i])
        return self.x[i, ..., :n], self.y[i, :n]


def _as_sets(name: str, value: Any, n_sets: int | None) -> list[np.ndarray] | None:
    """A (K, ...) array or a list of K arrays, as a list of float64 arrays."""
    if value is None:
        return None
    if isinstance(value, np.ndarray) or not isinstance(value, (list, tuple)):
        arr = V._real_array(name, value)
        if arr.ndim < 2:
            raise V.FitInputError(
                name, arr.shape, f"{name} must be a (K, n) stack or a list of K arrays (one per data set); got shape {arr.shape}."
            )
        sets = list(arr)
    else:
        sets = [V._real_array(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if n_sets is not None and len(sets) != n_sets:
        raise V.FitInputError(name, len(sets), f"{name} holds {len(sets)} data sets but ydata holds {n_sets}; they must match.")
    return sets


def _is_list_of_arrays(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and np.ndim(value[0]) >= 1


def _x_sets(xdata, n_sets: int) -> list[np.ndarray]:
    """x per set. One x shared by every set is a ``(n,)`` or ``(k, n)`` array whose first
    axis is not ``K``; a ``(K, n)`` or ``(K, k, n)`` array, or a list of K arrays, is per set
    (a ``(K, n)`` x with K == k is read as per set)."""
    if _is_list_of_arrays(xdata):
        return _as_sets("xdata", xdata, n_sets)
    arr = V._real_array("xdata", xdata)
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] != n_sets):
        return [arr] * n_sets
    return _as_sets("xdata", arr, n_sets)


def build_stack(
    xdata, ydata, sigma=None, *, check_finite: bool = True, nan_policy: str | None = None,
    n_params: int, invalid: str = "raise",
) -> Stack:
    """Validate every set (as the single-fit front door would) and pad them into a stack."""
    invalid = V.one_of("invalid", invalid, ("raise", "skip"))
    V.one_of("nan_policy", nan_policy, V.NAN_POLICIES)
    fast = _whole_stack(xdata, ydata, sigma, n_params)
    if fast is not None:
        return fast
    ysets = _as_sets("ydata", ydata, None)
    if not ysets:
        raise V.FitInputError("ydata", 0, "ydata holds no data sets; pass a (K, n) stack or a list of K arrays.")
    n_sets = len(ysets)
    xsets = _x_sets(xdata, n_sets)
    ssets = None
    if sigma is not None:
        s_arr = None if isinstance(sigma, (list, tuple)) else np.asarray(sigma)
        if s_arr is not None and s_arr.ndim == 1:
            ssets = [V._real_array("sigma", s_arr)] * n_sets
        else:
            ssets = _as_sets("sigma", sigma, n_sets)

    checked: list[V.Data | None] = []
    errors: dict[int, str] = {}
    for i in range(n_sets):
        try:
            s_i = None if ssets is None else ssets[i]
            if s_i is not None and s_i.ndim == 2:
                raise V.FitInputError(
                    "sigma", s_i.shape, "a batched fit takes per-point sigma (n,) per data set; a covariance matrix is not supported."
                )
            d = V.check_data(xsets[i], ysets[i], s_i, check_finite=check_finite, nan_policy=nan_policy)
            V.check_enough_points(d.n_points, [f"p{j}" for j in range(n_params)])
            checked.append(d)
        except V.FitInputError as exc:
            if invalid == "raise":
                raise type(exc)(f"{exc.field} (data set {i})", exc.value, f"data set {i}: {exc}") from exc
            errors[i] = f"{type(exc).__name__}: {exc}"
            checked.append(None)
    good = [d for d in checked if d is not None]
    if not good:
        raise V.FitInputError("ydata", n_sets, "no data set can be fitted: " + "; ".join(f"{i}: {m}" for i, m in list(errors.items())[:3]))
    nf = {d.n_features for d in good}
    if len(nf) > 1:
        raise V.FitInputError("xdata", sorted(nf), f"every data set must have the same number of x features; got {sorted(nf)}.")
    n_features = nf.pop()
    has_sigma = ssets is not None
    size, tile = standard_layout(max(d.n_points for d in good))
    xshape = (n_sets, size) if n_features == 1 and good[0].x.ndim == 1 else (n_sets, n_features, size)
    x = np.empty(xshape)
    y = np.empty((n_sets, size))
    s = np.empty((n_sets, size)) if has_sigma else None
    n_valid = np.zeros(n_sets, np.int64)
    omitted = np.zeros(n_sets, np.int64)
    filler = good[0]
    for i, d in enumerate(checked):
        src = d if d is not None else filler  # a skipped set computes on harmless data, then is discarded
        n = src.n_points
        x[i, ..., :n] = src.x
        x[i, ..., n:] = src.x[..., -1:]
        y[i, :n], y[i, n:] = src.y, src.y[-1]
        if s is not None:
            s[i, :n], s[i, n:] = src.sigma, src.sigma[-1]
        n_valid[i] = n
        omitted[i] = 0 if d is None else d.omitted
    return Stack(x, y, s, n_valid, int(tile), omitted, errors)


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    """Last axis padded with its last value up to ``size`` (the single fit's padding)."""
    n = a.shape[-1]
    if n == size:
        return np.ascontiguousarray(a)
    out = np.empty(a.shape[:-1] + (size,))
    out[..., :n] = a
    out[..., n:] = a[..., -1:]
    return out


def _whole_stack(xdata, ydata, sigma, n_params: int) -> Stack | None:
    """The common case at array speed: a finite ``(K, n)`` y stack, x shared or stacked,
    sigma None, shared or stacked and > 0. None means "check set by set" (anything else,
    or any non-finite value, which the per-set path reports or omits as asked)."""
    if not (isinstance(ydata, np.ndarray) and ydata.ndim == 2 and ydata.shape[1] >= max(n_params, 1)):
        return None
    if isinstance(xdata, (list, tuple)) or isinstance(sigma, (list, tuple)):
        return None
    y = V._real_array("ydata", ydata)
    k, n = y.shape
    x = V._real_array("xdata", xdata)
    if x.ndim == 1 and x.shape[0] == n:
        x_stack = np.broadcast_to(x, (k, n))
    elif x.ndim == 2 and x.shape[1] == n and x.shape[0] != k:
        x_stack = np.broadcast_to(x, (k,) + x.shape)
    elif x.ndim in (2, 3) and x.shape[0] == k and x.shape[-1] == n:
        x_stack = x
    else:
        return None
    s_stack = None
    if sigma is not None:
        s = V._real_array("sigma", sigma)
        if s.shape == (n,):
            s_stack = np.broadcast_to(s, (k, n))
        elif s.shape == (k, n):
            s_stack = s
        else:
            return None
        if not (np.all(np.isfinite(s_stack)) and np.all(s_stack > 0)):
            return None
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(x_stack))):
        return None
    size, tile = standard_layout(n)
    return Stack(_pad(x_stack, size), _pad(y, size), None if s_stack is None else _pad(s_stack, size),
                 np.full(k, n, np.int64), int(tile), np.zeros(k, np.int64), {})


def per_set(name: str, value, n_sets: int, n_params: int, names: Sequence[str]) -> np.ndarray | None:
    """``value`` as a ``(K, P)`` array: a scalar or ``(P,)`` is shared, ``(K, P)`` is per set."""
    if value is None:
        return None
    arr = V._real_array(name, value)
    if arr.ndim <= 1:
        vec = V._vector(name, arr, n_params, names)
        return np.broadcast_to(vec, (n_sets, n_params)).copy()
    if arr.shape != (n_sets, n_params):
        raise V.FitInputError(
            name, arr.shape, f"{name} must be shared (a scalar or ({n_params},)) or per data set ({n_sets}, {n_params}); got {arr.shape}."
        )
    return arr.copy()
