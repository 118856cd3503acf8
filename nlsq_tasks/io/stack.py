"""Many small data sets in one file: a ``.npz`` holding a stack.

Members (names configurable): ``y`` of shape ``(K, n)`` -- K data sets of n points --,
``x`` of shape ``(n,)`` (shared by every set), ``(K, n)`` or ``(K, k, n)``, and optionally
``sigma`` ``(n,)`` or ``(K, n)``. A batch task reads the rows it fits (``rows=(start, stop)``);
members are read with ``allow_pickle=False`` (a data file never runs code).
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np

from ._errors import StorageError, scrub
from ._fs import read_bytes, to_uri


def _open(uri: str, storage_options):
    if not to_uri(uri).lower().endswith(".npz"):
        raise StorageError(f"{scrub(uri, storage_options)}: a stack of data sets must be a .npz file "
                           "(members y (K, n), x (n,) or (K, n), optional sigma)")
    data = read_bytes(uri, storage_options)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # a corrupt or non-npz file
        raise StorageError(f"{scrub(uri, storage_options)} is not a readable npz file: {type(exc).__name__}: {exc}") from None


def _member(npz, key: str, uri: str, storage_options, required: bool = True):
    if key not in npz.files:
        if not required:
            return None
        raise StorageError(f"{scrub(uri, storage_options)} has no member {key!r}; it has {sorted(npz.files)}")
    return np.asarray(npz[key], dtype=np.float64)


def stack_size(uri: Any, y_key: str = "y", storage_options: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """``(K, n)``: how many data sets the stack holds, of how many points."""
    with _open(uri, storage_options) as npz:
        y = _member(npz, y_key, uri, storage_options)
    if y.ndim != 2:
        raise StorageError(f"{scrub(uri, storage_options)}: member {y_key!r} must be a (K, n) stack; got shape {y.shape}")
    return int(y.shape[0]), int(y.shape[1])


def load_stack(uri: Any, rows: tuple[int, int] | None = None, *, x_key: str = "x", y_key: str = "y",
               sigma_key: str | None = "sigma", storage_options: Mapping[str, Any] | None = None):
    """``(x, y, sigma)`` of rows ``[start, stop)`` (all when None); x and sigma are returned
    as stored when shared by every set (``(n,)``), else sliced like y."""
    with _open(uri, storage_options) as npz:
        y = _member(npz, y_key, uri, storage_options)
        x = _member(npz, x_key, uri, storage_options)
        s = None if sigma_key is None else _member(npz, sigma_key, uri, storage_options, required=False)
    if y.ndim != 2:
        raise StorageError(f"{scrub(uri, storage_options)}: member {y_key!r} must be a (K, n) stack; got shape {y.shape}")
    sl = slice(None) if rows is None else slice(int(rows[0]), int(rows[1]))
    k = y.shape[0]

    def per_set(a):
        return a[sl] if a is not None and a.ndim >= 2 and a.shape[0] == k else a

    return per_set(x), y[sl], per_set(s)
