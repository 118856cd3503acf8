"""The whole trust-region fit as one compiled ``lax.while_loop``, and its compile cache.

``solve`` runs, inside a single XLA computation,

.. math::

    p_0 \\to \\text{pass}(p_0) \\to \\big[\\text{propose} \\to \\text{pass}(p_{trial}) \\to
    \\text{update}\\big]^{\\le \\text{max\\_nfev}-1}

where every pass is an in-graph pass executor (:mod:`.passes`; by default
:func:`~.passes.tiled_pass` of the normal equations, cost and statistics fused, in
cache-sized tiles), so no Python runs per iteration. :func:`drive` is the loop for any
in-graph executor (a sharded one included); :func:`solve` is ``drive`` over the
in-memory tiled pass, and stays a pure, ``vmap``-able function of arrays. After the loop one cheap
reduction gives :math:`\\sum (y - \\bar y)^2` for :math:`R^2`.

Compiled solvers are cached on (model function, loss, x-scale mode, tile, sigma kind,
array shapes and dtypes). Tolerances, ``max_nfev``, ``f_scale``, bounds and the number of
real points are run-time arguments, so changing them never recompiles; padding ``n`` up
to a size bucket (see :func:`bucket_size`) lets nearby sizes share one executable.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._lru import BoundedLRU
from .progress import ProgressEvent
from .normal_eqs import ELEMENTWISE_MAX_POINTS, Factored, NormalEquations, as_factor, centered_sum_squares, zero_normal_eqs
from ._compiler import COMPILER_OPTIONS
from .passes import Layout, LeastSquaresFactorPass, NormalEquationsPass, in_graph_executor
from .passes import bucket_size as bucket_size  # noqa: F401  (re-exported: the loop's size buckets)
from .trust_region import RUNNING, Proposal, TRSettings, TRState, continue_state, tr_init, tr_propose, tr_update

_CACHE_SIZE = 64


class LoopOutput(NamedTuple):
    state: TRState
    sst: jnp.ndarray


def solve(fn, loss, tile, p0, lower, upper, x, y, sigma, n_valid, f_scale, settings: TRSettings,
          progress_token=None, mode: str = "auto") -> LoopOutput:
    """The whole fit from ``p0``, as a pure function of arrays (jit it with ``fn``, ``loss``,
    ``tile`` and ``mode`` static; it can be ``jax.vmap``-ed over ``p0``, as
    :func:`~.strategies.solve_batch` does).

    ``x, y, sigma`` are laid out as a strategy lays them out (the first ``n_valid`` points
    are real, the rest padding); :func:`run_loop` compiles, caches and times it.

    ``mode``: ``"auto"`` iterates on the normal equations (the fast pass) while they are
    well conditioned, and, if a pass finds them too ill-conditioned (``state.gram_ill``),
    continues the same iteration with the TSQR factor of J from there on (both loops are
    in the one compiled program; the second does nothing for a well-conditioned fit).
    ``"qr"`` uses TSQR throughout; ``"gram"`` stops where ``"auto"`` would switch (status
    still RUNNING, ``gram_ill`` set), for :func:`solve_from` to continue: :func:`run_loop`
    does that, so that a well-conditioned fit never compiles the TSQR loop.

    With a ``progress_token`` (an int32 scalar), every iteration sends (nit, nfev, cost) to
    the host through ``jax.debug.callback``, where :func:`_emit` hands it to the progress
    callback registered under that token. Without one, the compiled program has no callback.
    """
    layout = Layout(x, y, sigma, n_valid, tile)
    gram = in_graph_executor(NormalEquationsPass(fn, loss), layout, f_scale)
    qr = in_graph_executor(LeastSquaresFactorPass(fn, loss), layout, f_scale)
    # The normal-equations loop runs packed (see _drive_packed). The TSQR loops keep the plain
    # body: their results depend on XLA's rounding inside the pass (the polish stops on a
    # gain below 1e-15), and the packed program rounds differently there (NIST BoxBOD
    # start 1 lost 2 digits); they are the rare path (ill-conditioned fits).
    # Small data only (one block of at most ELEMENTWISE_MAX_POINTS points, where the fixed
    # cost per call matters): above it the pass's matrix products, compiled in a branch,
    # round differently for the robust losses (last bits of J^T r).
    packed = _runs_packed(y)
    if mode == "qr":
        state = drive(qr, p0, lower, upper, settings, progress_token)
    else:
        state = drive(gram, p0, lower, upper, settings, progress_token, stop_when_ill=True, packed=packed)
        if mode != "gram":
            state = drive(qr, state.p, lower, upper, settings, progress_token, start=state)
    if not packed:
        count = jnp.maximum(state.neq.count, 1.0)
        return LoopOutput(state, centered_sum_squares(y, n_valid, state.neq.sum_y / count))
    return LoopOutput(state, _sst(state, y, n_valid, settings))


def solve_from(fn, loss, tile, start: TRState, lower, upper, x, y, sigma, n_valid, f_scale, settings: TRSettings,
               progress_token=None) -> LoopOutput:
    """Continue ``start`` (a ``solve(mode="gram")`` state that stopped on ill-conditioned
    normal equations) with the TSQR pass: the second half of ``mode="auto"``."""
    qr = in_graph_executor(LeastSquaresFactorPass(fn, loss), Layout(x, y, sigma, n_valid, tile), f_scale)
    state = drive(qr, start.p, lower, upper, settings, progress_token, start=start)
    count = jnp.maximum(state.neq.count, 1.0)
    sst = centered_sum_squares(y, n_valid, state.neq.sum_y / count)
    return LoopOutput(state, sst)


def _runs_packed(y) -> bool:
    """Whether :func:`solve` runs its normal-equations loop packed (:func:`_drive_packed`):
    small data only (one block of at most ELEMENTWISE_MAX_POINTS points, where the fixed cost
    per call matters). :func:`_packing` asks the same question of the same ``y``."""
    return y.shape[0] <= ELEMENTWISE_MAX_POINTS


def _in_line(compute, always):
    """``compute()`` in a branch whose predicate ``always`` is True at run time but cannot be
    folded by XLA, so that its kernels run in line in the calling thread (see
    :func:`_drive_packed`); the other branch gives zeros of the same shapes."""
    zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(compute))
    return lax.cond(always, compute, lambda: zeros)


def _as_vector(tree):
    """The leaves of ``tree`` as one float64 vector (int32 counters and flags are exact)."""
    return jnp.concatenate([jnp.ravel(a).astype(jnp.float64) for a in jax.tree_util.tree_leaves(tree)])


def _sst(state, y, n_valid, settings):
    """:math:`\\sum (y - \\bar y)^2` at the end of the fit, in its own branch (see :func:`_drive_packed`)."""

    def sst():
        count = jnp.maximum(state.neq.count, 1.0)
        return centered_sum_squares(y, n_valid, state.neq.sum_y / count)

    return _in_line(sst, jnp.asarray(settings.max_nfev) >= 0)


def drive(evaluate, p0, lower, upper, settings: TRSettings, progress_token=None, *,
          stop_when_ill: bool = False, start: TRState | None = None, packed: bool = False) -> TRState:
    """The trust-region loop as one ``lax.while_loop`` over an in-graph pass executor.

    ``evaluate(params (p,))`` is traceable (see :mod:`.passes`) and returns
    :class:`~.normal_eqs.NormalEquations` or a :class:`~.normal_eqs.LeastSquaresFactor`:
    the in-memory tiled pass, or a sharded one. Returns the final state (``status`` set).
    ``stop_when_ill``: also stop (status still RUNNING) when a pass reports ill-conditioned
    normal equations. ``start``: continue that state (its ``p`` is re-evaluated first),
    if it is still RUNNING; otherwise it is returned as is.
    """
    # The first pass (at p0) runs inside the loop too, so the data pass appears once in the
    # compiled program (it dominates compile time): iteration 0 evaluates p0 and calls
    # tr_init, later ones evaluate the proposal and call tr_update.
    def initial():
        if start is None:
            placeholder = tr_init(p0, zero_normal_eqs(p0.shape[0]), lower, upper, settings)
            return placeholder._replace(status=jnp.asarray(RUNNING, jnp.int32)), jnp.asarray(False)
        return start._replace(gram_ill=jnp.asarray(False)), jnp.asarray(False)

    first = None
    if start is not None:
        first = lambda neq: continue_state(tr_init(p0, neq, lower, upper, settings), start)  # noqa: E731
    if packed:
        hard_cap = settings.max_nfev + 1
        state, _ = _drive_packed(evaluate, initial, p0, lower, upper, settings, hard_cap, progress_token,
                                 stop_when_ill, first or (lambda neq: tr_init(p0, neq, lower, upper, settings)))
        return state
    state, _ = drive_from(evaluate, initial(), p0, lower, upper, settings,
                          progress_token=progress_token, stop_when_ill=stop_when_ill, first=first)
    return state


def drive_from(evaluate, carry, p0, lower, upper, settings: TRSettings, stop_nfev=None, progress_token=None, *,
               stop_when_ill: bool = False, first=None):
    """:func:`drive` from a loop ``carry = (state, started)``, until the fit stops or, when
    ``stop_nfev`` (a run-time value) is given, ``nfev`` reaches it; returns the carry.

    Resumable segments (checkpointed sharded runs) call this with the carry they saved:
    the iterates are exactly those of one uninterrupted loop. ``first(neq)`` makes the
    state from the first pass (default ``tr_init`` at ``p0``); ``stop_when_ill``: see :func:`drive`.
    """
    if first is None:
        first = lambda neq: tr_init(p0, neq, lower, upper, settings)  # noqa: E731
    hard_cap = settings.max_nfev + 1  # belt and braces: tr_update stops at max_nfev
    if stop_nfev is not None:
        hard_cap = jnp.minimum(hard_cap, stop_nfev)

    def cond(carry):
        s, _ = carry
        go = (s.status == RUNNING) & (s.nfev < hard_cap)
        return (go & ~s.gram_ill) if stop_when_ill else go

    def body(carry):
        s, started = carry
        prop = tr_propose(s, lower, upper, settings)
        neq = Factored(*as_factor(evaluate(jnp.where(started, prop.p_trial, p0))))  # once, for both branches
        s = lax.cond(
            started,
            lambda: tr_update(s, prop, neq, lower, upper, settings),
            lambda: first(neq),
        )
        if progress_token is not None:
            jax.debug.callback(_emit, progress_token, s.nit, s.nfev, s.neq.cost)
        return s, jnp.asarray(True)

    return lax.while_loop(cond, body, carry)


class _Packer:
    """A pytree of arrays <-> one float64 vector (int32 counters and flags are exact in float64)."""

    def __init__(self, template):
        leaves, self.treedef = jax.tree_util.tree_flatten(template)
        self.shapes = [(tuple(a.shape), a.dtype) for a in leaves]
        self.sizes = [int(np.prod(shape)) for shape, _ in self.shapes]

    pack = staticmethod(_as_vector)

    def unpack(self, vec):
        out, at = [], 0
        for (shape, dtype), size in zip(self.shapes, self.sizes):
            out.append(vec[at:at + size].reshape(shape).astype(dtype))
            at += size
        return jax.tree_util.tree_unflatten(self.treedef, out)


class _Step(NamedTuple):
    """The packed loop's carry: the state, the proposal to evaluate next, and whether the
    first pass (at ``p0``) has run."""

    state: TRState
    prop: Proposal
    started: jnp.ndarray


def _drive_packed(evaluate, initial, p0, lower, upper, settings, hard_cap, progress_token, stop_when_ill, first):
    """:func:`drive`'s loop (the same arithmetic) shaped for XLA:CPU's thunk runtime.

    XLA:CPU runs each computation (the entry, a loop body, a conditional branch) with a thunk
    executor that runs its kernels one after the other in the calling thread only when it has
    at most 8 of them or touches no buffer over 512 bytes; otherwise it hands kernels whose
    inputs are ready to the intra-op thread pool, and on a small fit every hand-off (a thread
    wake-up, tens of microseconds on a shared VM) costs more than the kernels. The plain
    loop had ~120 kernels per iteration and ~80 at the entry next to the data: a 100-point
    fit spent more time handing kernels between threads than computing.

    So every computation that touches the data has at most 8 kernels, and the many small
    ``p x p`` kernels live in branches that touch no data (which run in line, however many):

    - the entry: build the start (a branch), the loop, unpack the result (a branch);
    - the loop body: the pass (its own branch: ``evaluate`` is the only code that reads
      the data), then one branch for the whole step (update, then the next proposal), and
      the copy of the carry, which is one float64 vector (one copy, not one per field);
    - the loop's condition reads three numbers of that vector.

    The branches' predicate is a run-time ``True`` that XLA cannot fold (``max_nfev >= 0``).
    ``initial()`` gives the ``(state, started)`` to start from (built inside a branch too).
    """
    p0 = jnp.asarray(p0, jnp.float64)
    always = jnp.asarray(settings.max_nfev) >= 0  # True at run time; XLA cannot fold it away

    def propose(s):
        return tr_propose(s, lower, upper, settings)

    def blank(s):
        return Proposal(p0, jnp.zeros_like(p0), jnp.zeros_like(p0), jnp.zeros((), p0.dtype), s.alpha)

    def proposal_at(s):
        """The next trial point, while the fit runs (no proposal after the last update)."""
        return lax.cond(s.status == RUNNING, lambda: propose(s), lambda: blank(s))

    def start():  # the first pass is at p0: no proposal yet
        state0, _ = initial()
        return _Step(state0, blank(state0), jnp.asarray(False))

    packer = _Packer(jax.eval_shape(start))

    def cond(vec):
        s = packer.unpack(vec).state
        go = (s.status == RUNNING) & (s.nfev < hard_cap)
        return (go & ~s.gram_ill) if stop_when_ill else go

    def body(vec):
        # the pass's result leaves the branch as it is: packing its sums into one vector would
        # change the shape of their reductions, and with it XLA's summation order (last bits)
        raw = _in_line(lambda: evaluate(packer.unpack(vec).prop.p_trial), always)

        def advance():
            step = packer.unpack(vec)
            neq = Factored(*as_factor(raw))
            s = lax.cond(
                step.started,
                lambda: tr_update(step.state, step.prop, neq, lower, upper, settings),
                lambda: first(neq),
            )
            if progress_token is not None:
                jax.debug.callback(_emit, progress_token, s.nit, s.nfev, s.neq.cost)
            return packer.pack(_Step(s, proposal_at(s), jnp.asarray(True)))

        return lax.cond(always, advance, lambda: vec)

    vec = lax.while_loop(cond, body, _in_line(lambda: packer.pack(start()), always))
    step = _in_line(lambda: packer.unpack(vec), always)
    return step.state, step.started


# Progress callbacks of running loops, by token: the compiled program carries only the
# token, so one cached executable serves every caller (and callbacks run on XLA's threads,
# where thread-locals of the caller are not visible).
_reporters: dict[int, tuple[Any, int]] = {}
_tokens = itertools.count(1)


def _emit(token, nit, nfev, cost) -> None:
    entry = _reporters.get(int(token))
    if entry is None:
        return
    callback, n_chunks = entry
    try:
        callback(ProgressEvent("pass", int(nfev), n_chunks - 1, n_chunks, float(cost), int(nit)))
    except Exception:  # a failing progress display must not fail the fit
        logging.getLogger("nlsq_tasks").exception("progress callback failed")


class _Compiled:
    def __init__(self, executable, compile_s: float, compile_cpu_s: float, unpack):
        self.executable = executable
        self.compile_s = compile_s
        self.compile_cpu_s = compile_cpu_s
        self.unpack = unpack
        # compiled with no jax.default_device in force: it runs on the default device,
        # where _DeviceConstants puts its arrays
        self.on_default_device = jax.config.jax_default_device is None


def _packing(function):
    """``function`` (:func:`solve`, :func:`solve_from`) with its output as one float64 vector:
    fetching ~20 small arrays one by one costs more (~130 us, measured) than the whole loop
    of a 100-point fit; one array is one copy. Integers and flags are exact in float64
    (counts < 2**53)."""

    def packed(*args):
        out = function(*args)
        if getattr(function, "func", function) is not solve or not _runs_packed(args[7]):
            return _as_vector(out)
        # in a branch (predicate True at run time: nfev >= 1), so that its ~30 small kernels
        # run in line rather than from the entry computation (see _drive_packed)
        return _in_line(lambda: _as_vector(out), out.state.nfev >= 0)

    # the persistent compilation cache names its entries after this function: keep them
    # recognisable as the solver's ("jit__solve_packed_<variant>")
    packed.__name__ = "_solve_packed_" + getattr(function, "__name__", "solve").lstrip("_")
    return packed


def _unpacker(shapes):
    """Host-side inverse of :func:`_packing` for an output shaped like ``shapes`` (eval_shape).

    Scalars come back as NumPy scalars of their dtype, arrays as read-only float64 views of
    the fetched vector (no copy: a result keeps only what it copies or computes from them)
    or converted to their dtype (exact: see :func:`_packing`). The slicing plan is made
    once per compiled solver: a small fit's state has ~25 leaves, and this runs every call."""
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    arrays, scalars, offset = [], {}, 0  # scalars: one gather per dtype, not one index per leaf
    for position, a in enumerate(leaves):
        size = int(np.prod(a.shape))
        dtype = np.dtype(a.dtype)
        if a.shape:
            arrays.append((position, offset, offset + size, tuple(a.shape), None if dtype == np.float64 else dtype))
        else:
            scalars.setdefault(dtype, ([], []))
            scalars[dtype][0].append(position)
            scalars[dtype][1].append(offset)
        offset += size
    gathers = [(dtype, positions, np.asarray(offsets)) for dtype, (positions, offsets) in scalars.items()]

    def unpack(vec):
        vec = np.asarray(vec)
        parts = [None] * len(leaves)
        for position, lo, hi, shape, cast in arrays:
            part = vec[lo:hi].reshape(shape)
            parts[position] = part if cast is None else part.astype(cast)
        for dtype, positions, offsets in gathers:  # iterating an array gives scalars of its dtype
            values = vec[offsets]
            for position, value in zip(positions, values if dtype == np.float64 else values.astype(dtype)):
                parts[position] = value
        return treedef.unflatten(parts)

    return unpack


_cache: OrderedDict[Any, _Compiled] = OrderedDict()
_lock = threading.Lock()


def _signature(a):
    return None if a is None else (a.shape, a.dtype)  # numpy arrays here: a tuple and a hashable dtype


_GRAM = functools.partial(solve, mode="gram")


class _DeviceConstants:
    """The arguments of a compiled call that a repeated fit passes unchanged (bounds, real
    point count, ``f_scale``, settings), kept on the device once they are seen twice.

    A NumPy argument is converted on every call; a device array is not (measured: ~10-14
    us less per call of a 3-parameter fit). Keyed by the bytes of the values (so -0.0 and
    0.0, or two NaNs, are told apart exactly as the program sees them), made on the second
    sighting (a fit whose bounds change every call pays nothing), bounded (oldest dropped).
    The program and the values it gets are the same either way."""

    SIZE = 64

    def __init__(self):
        self._seen = BoundedLRU(self.SIZE)  # key -> True (seen once) or the device copies

    def get(self, lower, upper, n_valid, f_scale, settings: TRSettings):
        xs = settings.x_scale
        try:
            key = (lower.tobytes(), upper.tobytes(), lower.shape, n_valid.tobytes(), f_scale.tobytes(),
                   np.asarray(settings.ftol).tobytes(), np.asarray(settings.xtol).tobytes(),
                   np.asarray(settings.gtol).tobytes(), np.asarray(settings.max_nfev).tobytes(),
                   np.asarray(settings.max_nfev).dtype, None if xs is None else (np.asarray(xs).tobytes(), np.shape(xs)))
        except (AttributeError, TypeError):  # settings already traced or foreign: pass them as they are
            return None
        held = self._seen.get(key)
        if held is None:  # first sighting: remember the key only
            self._seen.put(key, True)
            return None
        if held is not True:
            return held
        on_device = tuple(jax.device_put((lower, upper, n_valid, f_scale, settings)))
        self._seen.put(key, on_device)
        return on_device

    def clear(self) -> None:
        self._seen.clear()


_constants = _DeviceConstants()


def run_loop(fn, loss: str, tile: int, p0, lower, upper, x, y, sigma, n_valid: int, f_scale: float, settings: TRSettings,
             progress=None):
    """Run the compiled loop; returns ``(LoopOutput, timings)``.

    ``progress(event)`` (optional) is called once per iteration with
    ``{"phase": "pass", "pass", "chunk", "n_chunks", "cost", "nit"}``.

    ``timings`` holds ``compile_s`` (wall, 0.0 when a cached executable was reused),
    ``compile_cpu_s`` (process CPU seconds of that compile) and ``run_s``.
    """
    args = (  # numpy: converted once by the compiled call (cheaper than jnp.asarray each)
        np.asarray(p0, np.float64),
        np.asarray(lower, np.float64),
        np.asarray(upper, np.float64),
        x,
        y,
        sigma,
        np.int64(n_valid),
        np.float64(f_scale),
        settings,
    )
    token = None
    if progress is not None:
        token = next(_tokens) % 2_000_000_000 + 1  # fits the int32 the program carries
        _reporters[token] = (progress, max(1, -(-int(n_valid) // max(1, int(tile)))))
        args = args + (np.int32(token),)
    key = (
        fn, loss, int(tile), settings.x_scale is None,
        tuple(_signature(a) for a in args[:6]), progress is not None,
    )  # fmt: skip
    t0 = time.perf_counter()
    timings = {"compile_s": 0.0, "compile_cpu_s": 0.0}
    try:
        out = _call(("gram",) + key, _GRAM, fn, loss, tile, _with_constants(("gram",) + key, args), timings)
        if int(out.state.status) == RUNNING and bool(out.state.gram_ill):
            # the normal equations lost too many digits: continue on the factor of J (TSQR)
            qr_key = ("qr",) + key
            out = _call(qr_key, solve_from, fn, loss, tile, (out.state,) + _with_constants(qr_key, args)[1:], timings)
    finally:
        if token is not None:
            _reporters.pop(token, None)
    timings["run_s"] = time.perf_counter() - t0 - timings["compile_s"]
    return out, timings


def _with_constants(key, args):
    """``args`` with the constants on the device (see :class:`_DeviceConstants`) when the
    solver for ``key`` is compiled and runs on the default device, and no other device is
    the default now (an explicit ``jax.default_device`` keeps NumPy arguments)."""
    entry = _cache.get(key)
    if entry is None or not entry.on_default_device or jax.config.jax_default_device is not None:
        return args
    constants = _constants.get(*args[1:3], *args[6:9])
    if constants is None:
        return args
    lower, upper, n_valid, f_scale, settings = constants
    return (args[0], lower, upper, *args[3:6], n_valid, f_scale, settings, *args[9:])


def _call(key, function, fn, loss, tile, args, timings):
    """Run ``function`` compiled for these argument shapes (cached), adding compile times."""
    with _lock:
        entry = _cache.get(key)
        if entry is not None:
            _cache.move_to_end(key)
    if entry is None:
        t0, c0 = time.perf_counter(), time.process_time()
        jitted = jax.jit(_packing(function), static_argnums=(0, 1, 2))
        executable = jitted.lower(fn, loss, int(tile), *args).compile(compiler_options=COMPILER_OPTIONS)
        shapes = jax.eval_shape(functools.partial(function, fn, loss, int(tile)), *args)
        entry = _Compiled(executable, time.perf_counter() - t0, time.process_time() - c0, _unpacker(shapes))
        timings["compile_s"] += entry.compile_s
        timings["compile_cpu_s"] += entry.compile_cpu_s
        with _lock:
            _cache[key] = entry
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return entry.unpack(np.asarray(entry.executable(*args)))  # one vector to host, then split

