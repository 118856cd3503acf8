"""The trust-region loop ``vmap``-ed over data sets, compiled once per shape.

The single fit's loop (:func:`~nlsq_tasks.engine.loop.drive_from` over the in-memory pass,
as :func:`~nlsq_tasks.engine.loop.solve` runs it) is a pure function of arrays, so
``jax.vmap`` over its data arguments gives many independent fits in one XLA computation.
Under ``vmap`` the ``lax.while_loop`` runs while *any* fit is still running and selects,
for every fit, the old carry when its own predicate is false: a finished fit is frozen bit
for bit while the others iterate, and each fit stops on its own criteria (status, ``nfev``,
``nit``). The fits run in lanes, refilled between bounded rounds (:func:`solve_lanes`).

Per fit: start, bounds, data, sigma, number of real points and the three tolerances (they
follow each set's size, as a single fit's adaptive tolerances do). Shared: model, loss,
``f_scale``, ``max_nfev`` and ``x_scale``.

Several local devices: the fits axis of a block is split over all of them with a
``NamedSharding``; XLA partitions the computation (each device runs its own fits, only the
loop's "anyone still running?" test is reduced across devices). Fits never interact, so
the result does not depend on the number of devices.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..engine._compiler import COMPILER_OPTIONS
from ..engine.loop import LoopOutput, drive_from
from ..engine.normal_eqs import centered_sum_squares, zero_factor
from ..engine.passes import Layout, NormalEquationsPass, in_graph_executor
from ..engine.trust_region import RUNNING, TRSettings, tr_init

_CACHE_SIZE = 32
# The engine's options except the fusion-emitter switch: with it, a batch split over 2 lanes
# differed from the same batch in one block by 4.9e-10 (roundoff of the vmapped Jacobi step
# under the other emitters), which the two-device test refuses; without it they agree bit
# for bit and equal fit() to 1e-10.
_COMPILER_OPTIONS = {k: v for k, v in COMPILER_OPTIONS.items() if k != "xla_cpu_use_fusion_emitters"}
_cache: OrderedDict[Any, Any] = OrderedDict()
_lock = threading.Lock()


def _mesh():
    devices = jax.local_devices()
    if len(devices) < 2:
        return None
    from jax.sharding import Mesh

    return Mesh(np.array(devices), ("fits",))


def n_devices() -> int:
    return max(1, len(jax.local_devices()))


def _sig(a):
    return None if a is None else (tuple(np.shape(a)), str(a.dtype))


def clear_cache() -> None:
    with _lock:
        _cache.clear()



# -- lanes: finished fits make room for waiting ones ---------------------------------------
# Under vmap a while_loop runs every fit of a block until the slowest stops: with a mean of
# ~9 evaluations and a maximum of ~21 (1e4 decays of 100 points), more than half of the
# block's work was spent on fits that had already stopped. Lanes run the loop in rounds of
# at most ROUND_EVALUATIONS evaluations (``drive_from`` with a per-fit ``stop_nfev``, which
# resumes exactly where it stopped: the iterates are those of one uninterrupted loop);
# between rounds the host hands each finished lane's result out and gives the lane the next
# waiting fit. One executable serves every round. Short rounds waste less (a fit that stops
# mid-round idles till its end), long ones pay the per-call overhead less often.
ROUND_EVALUATIONS = 3


class _Packing:
    """One fit's loop carry ``(state, started)`` and its ``sst`` as one float64 row.

    Between rounds the host only needs a lane's status and nfev, and a finished lane's
    outputs; passing and fetching the ~28 arrays of the carry one by one cost ~2 ms of
    dispatch and transfer per round (measured: ~25% of a round at 1280 lanes). As one
    ``(lanes, width)`` array the carry stays where the executable left it, and one fetch
    per round gives the host everything. Exact: int32 counters and flags are exact in
    float64, and float64 leaves are copied as they are."""

    def __init__(self, n_params: int, jac_scale: bool):
        shapes = (_state_shapes(n_params, jac_scale), jax.ShapeDtypeStruct((), np.bool_))
        self.leaves, self.treedef = jax.tree_util.tree_flatten(shapes)
        self.sizes = [int(np.prod(a.shape)) for a in self.leaves]
        self.offsets = [int(o) for o in np.cumsum([0] + self.sizes)]
        self.width = self.offsets[-1] + 1  # + sst
        state = self.treedef.unflatten(list(range(len(self.leaves))))[0]
        self.status = self.offsets[state.status]
        self.nfev = self.offsets[state.nfev]

    def pack(self, carry, sst):
        parts = [jnp.ravel(a).astype(jnp.float64) for a in jax.tree_util.tree_leaves(carry)]
        return jnp.concatenate(parts + [jnp.reshape(sst, (1,)).astype(jnp.float64)])

    def unpack(self, row):
        leaves = [row[o:o + n].reshape(a.shape).astype(a.dtype) for o, n, a in zip(self.offsets, self.sizes, self.leaves)]
        return self.treedef.unflatten(leaves)

    def outputs(self, rows: np.ndarray) -> LoopOutput:
        """Host: the :class:`LoopOutput` of ``(K, width)`` packed rows."""
        k = rows.shape[0]
        leaves = [rows[:, o:o + n].reshape((k,) + a.shape).astype(a.dtype)
                  for o, n, a in zip(self.offsets, self.sizes, self.leaves)]
        state, _ = self.treedef.unflatten(leaves)
        return LoopOutput(state, rows[:, -1].copy())


def _lanes_fn(fn, loss: str, tile: int, has_sigma: bool, has_x_scale: bool, packing: _Packing):
    def one(packed, fresh, stop_nfev, p0, lower, upper, x, y, sigma, n_valid, ftol, xtol, gtol, f_scale, max_nfev,
            x_scale):
        settings = TRSettings(ftol, xtol, gtol, max_nfev, x_scale)
        if lower is None:  # every fit unbounded: the bounds are constants of the program
            lower, upper = np.full(p0.shape[0], -np.inf), np.full(p0.shape[0], np.inf)
        carry = packing.unpack(packed)
        # A fresh lane starts as engine.loop.drive starts: the placeholder state, not started.
        start = tr_init(p0, zero_factor(p0.shape[0]), lower, upper, settings)  # = the zero pass, factored (no eigh)
        start = (start._replace(status=jnp.asarray(RUNNING, jnp.int32)), jnp.asarray(False))
        carry = jax.tree_util.tree_map(lambda a, b: jnp.where(fresh, a, b), start, carry)
        evaluate = in_graph_executor(NormalEquationsPass(fn, loss), Layout(x, y, sigma, n_valid, tile), f_scale)
        carry = drive_from(evaluate, carry, p0, lower, upper, settings, stop_nfev=stop_nfev)
        state = carry[0]
        sst = centered_sum_squares(y, n_valid, state.neq.sum_y / jnp.maximum(state.neq.count, 1.0))
        return packing.pack(carry, sst)

    in_axes = (0,) * 8 + (0 if has_sigma else None,) + (0,) * 4 + (None, None, None)
    return jax.vmap(one, in_axes=in_axes)


# Lanes run as GROUPS independent sets of lanes (one executable, a half of the lanes each)
# when there are at least GROUPS * MIN_GROUP_LANES of them: while the device runs one
# group's round, the host hands out the other group's finished fits and refills its lanes.
# The device runs one round at a time (a profile shows the two groups' rounds never
# overlap), so the gain is host work off the critical path, not more cores. (Computing the
# finished fits' covariances there too was tried: no gain, measured.) A group is a batch
# of lanes like any other.
GROUPS = 2
MIN_GROUP_LANES = 256


class _Group:
    """Host bookkeeping of one set of lanes: which fit each lane holds, its data, its carry."""

    def __init__(self, lanes: int, width: int, per_fit, mesh):
        self.lane_fit = np.full(lanes, -1, np.int64)
        self.fresh = np.ones(lanes, bool)
        self.nfev_at = np.zeros(lanes, np.int64)  # a lane's nfev when its round starts (0: fresh)
        self.carry = np.zeros((lanes, width))  # every lane fresh in its first round: never read
        # Each lane's data, rewritten only where a lane takes a new fit (gathering all lanes'
        # data every round cost ~20 ms at K = 1e4); a lane never used holds fit 0's, an idle
        # one its last fit's: with stop 0 neither runs, and their outputs are never read.
        # Handed to the executable as a copy (the device may keep using a buffer it adopted),
        # and only when some lane changed: the tail rounds reuse the arrays already placed.
        self.data = [None if a is None else a[np.zeros(lanes, np.int64)] for a in per_fit]
        self.placed = None
        self.mesh = mesh
        self.active = None

    def refill(self, per_fit, next_fit: int, k: int) -> int:
        free = np.flatnonzero(self.lane_fit < 0)
        take = min(len(free), k - next_fit)
        if take:
            rows, fits = free[:take], np.arange(next_fit, next_fit + take)
            self.lane_fit[rows] = fits
            self.fresh[rows] = True
            self.nfev_at[rows] = 0
            for dst, a in zip(self.data, per_fit):
                if a is not None:
                    dst[rows] = a[fits]
            self.placed = None
        return next_fit + take

    def args(self, hard_cap: int, shared):
        """The round's arguments, or None when no lane holds a fit."""
        self.active = self.lane_fit >= 0
        if not self.active.any():
            return None
        stop = np.where(self.active, np.minimum(self.nfev_at + ROUND_EVALUATIONS, hard_cap), 0).astype(np.int32)
        if self.placed is None:
            self.placed = _place_lanes(tuple(None if a is None else a.copy() for a in self.data), self.mesh)
        return _place_lanes((self.carry, self.fresh.copy(), stop), self.mesh) + self.placed + shared

    def collect(self, out: np.ndarray, packing, done: np.ndarray, hard_cap: int) -> None:
        status, nfev = out[:, packing.status], out[:, packing.nfev]
        finished = self.active & ((status != RUNNING) | (nfev >= hard_cap))
        if finished.any():
            done[self.lane_fit[finished]] = out[finished]
            self.lane_fit[finished] = -1
        self.fresh[:] = False
        self.nfev_at = nfev.astype(np.int64)


def solve_lanes(fn, loss, tile, lanes: int, p0, lower, upper, x, y, sigma, n_valid, tols, f_scale, max_nfev,
                x_scale) -> tuple[LoopOutput, dict]:
    """All ``K`` fits (leading axis) through ``lanes`` lanes; returns host arrays and timings.

    Each fit's output is exactly what :func:`~nlsq_tasks.engine.loop.solve` gives alone
    (same loop, resumed between rounds from its own carry). ``lanes`` is a multiple of the
    device count; the executable is cached on (model, loss, tile, shapes, devices).
    """
    k, n_params = p0.shape
    lanes = int(lanes)
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    if np.all(np.isneginf(lower)) and np.all(np.isposinf(upper)):
        lower = upper = None
    per_fit = [np.asarray(p0, np.float64), lower, upper,
               np.asarray(x), np.asarray(y), None if sigma is None else np.asarray(sigma),
               np.asarray(n_valid, np.int64), np.ascontiguousarray(tols[:, 0]), np.ascontiguousarray(tols[:, 1]),
               np.ascontiguousarray(tols[:, 2])]
    mesh = _mesh()
    shared = _place_shared((np.float64(f_scale), np.int32(max_nfev),
                            None if x_scale is None else np.asarray(x_scale, np.float64)), mesh)
    packing = _packing(n_params, x_scale is None)
    # (CPU only: an accelerator wants its lanes in one launch, and none was at hand to measure)
    n_groups = (GROUPS if mesh is None and jax.default_backend() == "cpu" and lanes % GROUPS == 0
                and lanes >= GROUPS * MIN_GROUP_LANES else 1)
    groups = [_Group(lanes // n_groups, packing.width, per_fit, mesh) for _ in range(n_groups)]
    done = np.zeros((k, packing.width))
    next_fit, rounds, compile_s, run_s = 0, 0, 0.0, 0.0
    exe = None
    hard_cap = int(max_nfev) + 1
    in_flight = []  # (group, the executable's output), in the order they were started
    for group in groups:
        next_fit = group.refill(per_fit, next_fit, k)
    queue = list(groups)
    while queue or in_flight:
        for group in queue:  # start every group that has work (asynchronous: returns at once)
            args = group.args(hard_cap, shared)
            if args is None:
                continue
            if exe is None:
                exe, compile_s = _executable(fn, loss, tile, sigma is not None, x_scale is not None, packing, args, mesh)
            t0 = time.perf_counter()
            in_flight.append((group, exe(*args)))
            run_s += time.perf_counter() - t0
        queue = []
        if not in_flight:
            break
        group, result = in_flight.pop(0)
        t0 = time.perf_counter()
        out = np.asarray(jax.device_get(result))
        run_s += time.perf_counter() - t0
        rounds += 1
        group.carry = result
        group.collect(out, packing, done, hard_cap)
        next_fit = group.refill(per_fit, next_fit, k)
        queue = [group]
    return packing.outputs(done), {"compile_s": compile_s, "run_s": run_s, "rounds": rounds, "groups": n_groups}


def _executable(fn, loss, tile, has_sigma, has_x_scale, packing, args, mesh):
    """The compiled round for these argument shapes (cached) and its compile time (0: cached)."""
    key = ("lanes", fn, loss, int(tile), tuple(_sig(a) for a in args[3:]), 0 if mesh is None else len(mesh.devices))
    with _lock:
        exe = _cache.get(key)
    if exe is not None:
        return exe, 0.0
    t0 = time.perf_counter()
    jitted = jax.jit(_lanes_fn(fn, loss, int(tile), has_sigma, has_x_scale, packing))
    exe = jitted.lower(*args).compile(compiler_options=_COMPILER_OPTIONS)
    compile_s = time.perf_counter() - t0
    with _lock:
        _cache[key] = exe
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return exe, compile_s


@functools.lru_cache(maxsize=64)
def _state_shapes(n_params: int, jac_scale: bool):
    """Shapes and dtypes of the loop's state (``jax.eval_shape``: running ``tr_init`` on the
    host op by op, its Jacobi loops included, cost ~0.13 s per batch, measured)."""
    settings = TRSettings(np.float64(0), np.float64(0), np.float64(0), np.int32(1),
                          None if jac_scale else np.ones(n_params))
    p = np.zeros(n_params)
    return jax.eval_shape(lambda p0, lo, hi: tr_init(p0, zero_factor(n_params), lo, hi, settings), p, p, p)


@functools.lru_cache(maxsize=64)
def _packing(n_params: int, jac_scale: bool) -> _Packing:
    return _Packing(n_params, jac_scale)


def _place_lanes(args, mesh):
    """Lane arrays split over the devices along their first axis (as they are on one device)."""
    if mesh is None:
        return tuple(args)
    from jax.sharding import NamedSharding, PartitionSpec

    split = NamedSharding(mesh, PartitionSpec("fits"))
    return tuple(None if a is None else jax.device_put(a, split) for a in args)


def _place_shared(args, mesh):
    """Arguments every lane shares, replicated over the devices."""
    if mesh is None:
        return tuple(args)
    from jax.sharding import NamedSharding, PartitionSpec

    whole = NamedSharding(mesh, PartitionSpec())
    return tuple(None if a is None else jax.device_put(a, whole) for a in args)
