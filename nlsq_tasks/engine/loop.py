"""The whole trust-region fit as one compiled ``lax.while_loop``, and its compile cache.

``solve`` runs, inside a single XLA computation,

.. math::

    p_0 \\to \\text{pass}(p_0) \\to \\big[\\text{propose} \\to \\text{pass}(p_{trial}) \\to
    \\text{update}\\big]^{\\le \\text{max\\_nfev}-1}

where every pass is :func:`~.normal_eqs.data_pass` (cost, normal equations and statistics
fused, in cache-sized tiles), so no Python runs per iteration. After the loop one cheap
reduction gives :math:`\\sum (y - \\bar y)^2` for :math:`R^2`.

Compiled solvers are cached on (model function, loss, x-scale mode, tile, sigma kind,
array shapes and dtypes). Tolerances, ``max_nfev``, ``f_scale``, bounds and the number of
real points are run-time arguments, so changing them never recompiles; padding ``n`` up
to a size bucket (see :func:`bucket_size`) lets nearby sizes share one executable.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .normal_eqs import NormalEquations, centered_sum_squares, data_pass
from .trust_region import RUNNING, TRSettings, TRState, tr_init, tr_propose, tr_update

_CACHE_SIZE = 64


class LoopOutput(NamedTuple):
    state: TRState
    sst: jnp.ndarray


def bucket_size(n: int) -> int:
    """Smallest ``m * 2**e >= n`` with ``8 <= m < 16`` (1/8-octave buckets: <= 12.5% padding)."""
    if n <= 16:
        return n
    e = max(n.bit_length() - 4, 0)
    m = -(-n // (1 << e))
    return m << e


def _solve(fn, loss, tile, p0, lower, upper, x, y, sigma, n_valid, f_scale, settings: TRSettings) -> LoopOutput:
    def evaluate(p) -> NormalEquations:
        return data_pass(fn, loss, f_scale, p, x, y, sigma, n_valid, tile)

    state = tr_init(p0, evaluate(p0), lower, upper, settings)
    hard_cap = settings.max_nfev + 1  # belt and braces: tr_update stops at max_nfev

    def cond(s: TRState):
        return (s.status == RUNNING) & (s.nfev < hard_cap)

    def body(s: TRState) -> TRState:
        prop = tr_propose(s, lower, upper, settings)
        return tr_update(s, prop, evaluate(prop.p_trial), lower, upper, settings)

    state = lax.while_loop(cond, body, state)
    count = jnp.maximum(state.neq.count, 1.0)
    sst = centered_sum_squares(y, n_valid, state.neq.sum_y / count)
    return LoopOutput(state, sst)


class _Compiled:
    def __init__(self, executable, compile_s: float):
        self.executable = executable
        self.compile_s = compile_s


_cache: OrderedDict[Any, _Compiled] = OrderedDict()
_lock = threading.Lock()


def _signature(a):
    return None if a is None else (tuple(a.shape), str(a.dtype))


def run_loop(fn, loss: str, tile: int, p0, lower, upper, x, y, sigma, n_valid: int, f_scale: float, settings: TRSettings):
    """Run the compiled loop; returns ``(LoopOutput as numpy-convertible, compile_s, run_s)``.

    ``compile_s`` is 0.0 when a cached executable was reused.
    """
    args = (
        jnp.asarray(p0, jnp.float64),
        jnp.asarray(lower, jnp.float64),
        jnp.asarray(upper, jnp.float64),
        x,
        y,
        sigma,
        jnp.asarray(n_valid, jnp.int64),
        jnp.asarray(f_scale, jnp.float64),
        settings,
    )
    key = (
        fn, loss, int(tile), settings.x_scale is None,
        tuple(_signature(a) for a in args[:6]),
    )  # fmt: skip
    with _lock:
        entry = _cache.get(key)
        if entry is not None:
            _cache.move_to_end(key)
    compile_s = 0.0
    if entry is None:
        t0 = time.perf_counter()
        jitted = jax.jit(_solve, static_argnums=(0, 1, 2))
        executable = jitted.lower(fn, loss, int(tile), *args).compile()
        compile_s = time.perf_counter() - t0
        entry = _Compiled(executable, compile_s)
        with _lock:
            _cache[key] = entry
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    t0 = time.perf_counter()
    out = entry.executable(*args)
    out = jax.block_until_ready(out)
    run_s = time.perf_counter() - t0
    return out, compile_s, run_s


def clear_cache() -> None:
    with _lock:
        _cache.clear()
