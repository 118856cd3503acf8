"""The trust-region loop ``vmap``-ed over data sets, compiled once per shape.

:func:`~nlsq_tasks.engine.loop.solve` is a pure function of arrays, so ``jax.vmap`` over
its data arguments gives ``K`` independent fits in one XLA computation. Under ``vmap`` the
``lax.while_loop`` runs while *any* fit is still running and selects, for every fit, the
old carry when its own predicate is false: a finished fit is frozen bit for bit while the
others iterate, and each fit stops on its own criteria (status, ``nfev``, ``nit``).

Per fit: start, bounds, data, sigma, number of real points and the three tolerances (they
follow each set's size, as a single fit's adaptive tolerances do). Shared: model, loss,
``f_scale``, ``max_nfev`` and ``x_scale``.

Several local devices: the fits axis of a block is split over all of them with a
``NamedSharding``; XLA partitions the computation (each device runs its own fits, only the
loop's "anyone still running?" test is reduced across devices). Fits never interact, so
the result does not depend on the number of devices.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import jax
import numpy as np

from ..engine.loop import LoopOutput, solve
from ..engine.trust_region import TRSettings

_CACHE_SIZE = 32
_COMPILER_OPTIONS = {"xla_llvm_disable_expensive_passes": True}  # as engine.loop: p x p kernels gain nothing
_cache: OrderedDict[Any, Any] = OrderedDict()
_lock = threading.Lock()


def _vmapped(fn, loss: str, tile: int, has_sigma: bool, has_x_scale: bool):
    def one(p0, lower, upper, x, y, sigma, n_valid, ftol, xtol, gtol, f_scale, max_nfev, x_scale):
        settings = TRSettings(ftol, xtol, gtol, max_nfev, x_scale)
        return solve(fn, loss, tile, p0, lower, upper, x, y, sigma, n_valid, f_scale, settings)

    in_axes = (0, 0, 0, 0, 0, 0 if has_sigma else None, 0, 0, 0, 0, None, None, None)
    return jax.vmap(one, in_axes=in_axes)


def _mesh():
    devices = jax.local_devices()
    if len(devices) < 2:
        return None
    from jax.sharding import Mesh

    return Mesh(np.array(devices), ("fits",))


def n_devices() -> int:
    return max(1, len(jax.local_devices()))


def _place(args, mesh):
    """Per-fit arrays split over the devices along their first axis; shared ones replicated."""
    if mesh is None:
        return args
    from jax.sharding import NamedSharding, PartitionSpec

    split, whole = NamedSharding(mesh, PartitionSpec("fits")), NamedSharding(mesh, PartitionSpec())
    out = []
    for i, a in enumerate(args):
        if a is None:
            out.append(None)
        else:
            out.append(jax.device_put(a, split if i < 10 else whole))
    return tuple(out)


def _sig(a):
    return None if a is None else (tuple(np.shape(a)), str(a.dtype))


def solve_block(fn, loss, tile, p0, lower, upper, x, y, sigma, n_valid, tols, f_scale, max_nfev, x_scale) -> tuple[LoopOutput, dict]:
    """Run one block of fits (leading axis ``B``); returns host arrays and timings.

    ``tols`` is ``(B, 3)`` (ftol, xtol, gtol per fit). The executable is cached on
    (model, loss, tile, shapes, number of devices), so blocks of one shape compile once.
    """
    args = (
        np.asarray(p0, np.float64), np.asarray(lower, np.float64), np.asarray(upper, np.float64),
        x, y, sigma, np.asarray(n_valid, np.int64),
        np.ascontiguousarray(tols[:, 0]), np.ascontiguousarray(tols[:, 1]), np.ascontiguousarray(tols[:, 2]),
        np.float64(f_scale), np.int32(max_nfev), None if x_scale is None else np.asarray(x_scale, np.float64),
    )
    mesh = _mesh()
    key = (fn, loss, int(tile), tuple(_sig(a) for a in args), 0 if mesh is None else len(mesh.devices))
    with _lock:
        exe = _cache.get(key)
        if exe is not None:
            _cache.move_to_end(key)
    placed = _place(args, mesh)
    compile_s = 0.0
    if exe is None:
        t0 = time.perf_counter()
        jitted = jax.jit(_vmapped(fn, loss, int(tile), sigma is not None, x_scale is not None))
        exe = jitted.lower(*placed).compile(compiler_options=_COMPILER_OPTIONS)
        compile_s = time.perf_counter() - t0
        with _lock:
            _cache[key] = exe
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    t0 = time.perf_counter()
    out = jax.device_get(exe(*placed))
    return out, {"compile_s": compile_s, "run_s": time.perf_counter() - t0}


def clear_cache() -> None:
    with _lock:
        _cache.clear()

