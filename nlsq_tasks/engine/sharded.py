"""Sharded in-memory passes: one fit over every device of a node, or of a multi-process job.

The points are split over a one-axis device mesh (axis ``"points"``) in tiles of the
per-device batch ``b`` (:func:`per_device_batch`: ``MultiGPUConfig.per_device_batch_size``
on GPUs, else the strategy's tile; a preset or request can cap it): device ``d`` holds rows
``[d*m, (d+1)*m)``, ``m`` a multiple of ``b``, so tile ``k`` is rows ``[k*b, (k+1)*b)``
whatever the device count. Every pass is a ``shard_map`` in which each device computes
the partials of its own tiles; the partials of all tiles (a few p x p arrays each) are
then folded **in tile order** with the reduction's ``combine``, starting from its ``zero``
and skipping tiles without a real point (never a bare ``psum``: the pass interface's
contract is a fold in a fixed order, so the result does not depend on the device count or
on how a collective happens to add, and a non-additive reduction such as a TSQR factor
works unchanged). The trust-region step, tests and covariance are the shared, replicated
p x p work of :mod:`.loop` / :mod:`.trust_region`.

As on one device (:func:`~.loop.run_loop`), the passes form the normal equations while they
are well conditioned; once a pass reports them too ill-conditioned (``state.gram_ill``) the
fit continues, for good, on the TSQR factor of J (:class:`~.passes.LeastSquaresFactorPass`:
each tile by Householder QR, the tile factors stacked and re-factored in tile order). That
second program is compiled only when a fit needs it.

Data reach the devices shard by shard (``jax.make_array_from_callback``): each device's
slice is cut (and padded) on the host and placed on that device; there is never a whole
copy on one device. In a multi-process job (``jax.distributed``) the callback runs only
for this process's devices, so a process reads only its own rows (see
:func:`lay_out_rows`, which takes a row reader; the fsspec reading lives in
:mod:`nlsq_tasks.io`).

With one device nothing here runs: :func:`plan_devices` says so and the strategies run
their usual single-device program (nothing extra is compiled).

Checkpointed runs (multi-process jobs, which JAX brings down as a whole when one process
dies) run the same compiled loop in segments of ``every`` data passes; between segments
process 0 saves the whole trust-region state, and a re-launch loads it (process 0 reads,
then broadcasts) and continues: the iterates are exactly those of an uninterrupted run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..strategies import get_strategy, strategy_names
from ._compiler import COMPILER_OPTIONS
from .progress import ProgressEvent
from .finalize import build_result
from .loop import drive_from
from .normal_eqs import centered_sum_squares, zero_normal_eqs
from .passes import STANDARD_TILE, LeastSquaresFactorPass, NormalEquationsPass, standard_layout, tile_partial
from .options import SolverOptions
from .result import FitResult
from .trust_region import RUNNING, TRSettings, TRState, as_settings, continue_state, tr_init

logger = logging.getLogger("nlsq_tasks")

AXIS = "points"
# Fewer points per device than this and sharding costs more (a collective per pass,
# a second compiled program) than it saves: such fits run on one device.
MIN_ROWS_PER_DEVICE = 4096
# the strategies whose points can be sharded: those that hold the data in memory (the registry's)
STRATEGIES = tuple(name for name in strategy_names() if get_strategy(name).in_memory)


# -- the execution record ----------------------------------------------------------------
@dataclass(frozen=True)
class Execution:
    """Where a fit's passes ran: recorded on the plan, the result and its report."""

    backend: str  # "cpu", "gpu", "tpu"
    device_kind: str  # e.g. "NVIDIA H200", "cpu"
    n_devices: int  # devices the points are spread over (1: not sharded)
    n_processes: int  # JAX processes taking part (jax.distributed)
    rows_per_device: int  # rows each device holds, padding included
    per_device_batch: int  # points per tile each device folds (MultiGPUConfig, capped; else the strategy's tile)
    sharded: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        where = f"{self.n_devices} {self.backend} device(s) ({self.device_kind})"
        if self.n_processes > 1:
            where += f" in {self.n_processes} processes"
        return f"{where}, {self.rows_per_device:,} rows per device -- {self.reason}"


def _device_kind(devices) -> str:
    kinds = sorted({getattr(d, "device_kind", d.platform) for d in devices})
    return ", ".join(kinds)


def plan_devices(
    n_points: int,
    strategy: str,
    *,
    n_starts: int = 1,
    covariance: bool = False,
    cap: int | None = None,
    chunk_size: int | None = None,
    batch_cap: int | None = None,
) -> Execution:
    """Decide how many devices the passes of this fit use, and why (pure decision, no data).

    All of ``jax.devices()`` (every process's, in a ``jax.distributed`` job) is the pool;
    ``MultiGPUConfig`` from :func:`~nlsq_tasks.workflow.get_multi_gpu_config` bounds it on
    GPUs (a PBS/SLURM allocation's GPUs per node), ``cap`` (a preset's or request's
    ``devices``) bounds it further. One device, a covariance ``sigma``, multi-start
    (vmapped over starts on one device), streaming, or too few points per device: one
    device.

    The per-device batch of a sharded fit (the points of each tile a device folds) is
    ``MultiGPUConfig.per_device_batch_size`` where there is one (GPUs), else the
    strategy's own tile (standard: cache-sized; chunked: ``chunk_size``), bounded by
    ``batch_cap`` (a preset's or request's ``per_device_batch``) and by a device's share
    of the points. Each device holds a whole number of batches. The reason says which.
    """
    devices = jax.devices()
    backend = devices[0].platform
    n_proc = jax.process_count()
    pool = len(devices)
    why_pool = f"{pool} {backend} device(s) visible"
    cfg = None
    if backend == "gpu":
        from ..workflow import get_multi_gpu_config

        cfg = get_multi_gpu_config()
        if cfg is not None and cfg.n_devices < pool and n_proc == 1:
            pool, why_pool = cfg.n_devices, f"{why_pool}, MultiGPUConfig uses {cfg.n_devices}"
    if cap is not None and int(cap) < pool:
        pool, why_pool = int(cap), f"{why_pool}, capped to {int(cap)} by devices={int(cap)}"

    def single(reason: str) -> Execution:
        if n_proc > 1:
            raise ValueError(
                f"this fit cannot be spread over the {n_proc} processes of this jax.distributed job: {reason}. "
                f"Multi-process fits take strategy 'standard' or 'chunked', one start, per-point sigma."
            )
        tile = shard_layout(int(n_points), 1, strategy, chunk_size)[1] if strategy in STRATEGIES else int(chunk_size or 0)
        return Execution(backend, _device_kind(devices[:1]), 1, 1, int(n_points), tile, False, reason)

    if pool <= 1:
        return single(why_pool)
    if strategy not in STRATEGIES:
        return single(f"{why_pool}, but the {strategy} strategy runs its passes on one device")
    if covariance:
        return single(f"{why_pool}, but a covariance sigma (n, n) couples every point: one device")
    if n_starts > 1:
        return single(f"{why_pool}, but multi-start vmaps its {n_starts} starts on one device")
    if n_proc == 1 and n_points < pool * MIN_ROWS_PER_DEVICE:
        return single(f"{why_pool}, but {n_points:,} points are too few to share (< {MIN_ROWS_PER_DEVICE:,} per device)")
    if n_proc > 1 and pool != len(devices):
        raise ValueError(f"devices={cap}: a jax.distributed job spreads over all its {len(devices)} devices")
    batch, why_batch = per_device_batch(strategy, chunk_size, cfg, batch_cap)
    share = -(-int(n_points) // pool)
    if batch > share:  # one tile per device (the tiles then depend on the device count)
        batch, why_batch = share, f"{why_batch}, at most the {share:,} points per device"
    rows = -(-share // batch) * batch  # whole tiles: tile k is rows [k*batch, (k+1)*batch) for any device count
    reason = f"{why_pool}: points sharded over {pool}; {why_batch} ({batch:,} points)"
    return Execution(backend, _device_kind(devices[:pool]), pool, n_proc, rows, batch, True, reason)


def per_device_batch(strategy: str, chunk_size: int | None = None, config=None, cap: int | None = None) -> tuple[int, str]:
    """``(points per tile each device folds, why)``: ``config.per_device_batch_size`` (a
    ``MultiGPUConfig``) if given, else the strategy's tile (chunked: ``chunk_size``;
    standard: the cache-sized ``STANDARD_TILE``); at most ``cap``. It never depends on the
    device count, so neither do the tiles nor their fold (see :func:`_sharded_pass`)."""
    if config is not None:
        batch, why = int(config.per_device_batch_size), "per-device batch from MultiGPUConfig"
    elif strategy == "chunked" and chunk_size:
        batch, why = int(chunk_size), "per-device batch: the chunk size"
    else:
        batch, why = STANDARD_TILE, "per-device batch: the cache-sized tile"
    if cap is not None and int(cap) < batch:
        batch, why = int(cap), f"{why}, capped to {int(cap):,} by per_device_batch={int(cap)}"
    return batch, why


def shard_layout(n: int, n_devices: int, strategy: str, chunk_size: int | None = None) -> tuple[int, int]:
    """``(rows per device, tile)``: each device's share laid out as the strategy lays out
    a whole data set (standard: padded to a size bucket, cache-sized tiles; chunked:
    ``ceil(n / D)`` rows walked in ``chunk_size`` tiles)."""
    share = -(-int(n) // int(n_devices))
    if strategy == "standard":
        return standard_layout(share)
    return share, max(1, min(int(chunk_size or share), share))


# -- data placement ----------------------------------------------------------------------
class ShardedData(NamedTuple):
    mesh: Mesh
    x: jax.Array  # (D*m,) or (k, D*m), sharded on the last axis
    y: jax.Array  # (D*m,)
    sigma: jax.Array | None  # (D*m,) or None
    n_valid: int  # real points (the rest is padding, masked)
    rows: int  # m, rows per device
    tile: int


def make_mesh(n_devices: int) -> Mesh:
    """The first ``n_devices`` of ``jax.devices()`` (process order) on one axis."""
    return Mesh(np.array(jax.devices()[: int(n_devices)]), (AXIS,))


def _spec(ndim: int) -> P:
    return P(AXIS) if ndim == 1 else P(None, AXIS)


def _rows_of(index, ndim: int) -> slice:
    return index[-1] if ndim > 1 else index[0]


def lay_out_rows(read_rows: Callable[[int, int], tuple], n_points: int, n_features: int, has_sigma: bool,
                 fill: tuple, execution: Execution) -> ShardedData:
    """Global sharded arrays built from ``read_rows(lo, hi) -> (x, y, sigma)`` (real rows
    ``[lo, hi)`` only, ``hi <= n_points``), called once per device *of this process*.

    ``fill = (x_point, y_value, sigma_value)`` pads rows past ``n_points`` (a point where
    the model is finite: padding is masked, but must not poison the tile with NaN).
    """
    mesh = make_mesh(execution.n_devices)
    m = int(execution.rows_per_device)
    total = m * execution.n_devices
    n = int(n_points)
    cache: dict[int, tuple] = {}  # one read per device, shared by its x, y and sigma

    def rows(lo: int) -> tuple:
        if lo not in cache:
            hi = min(lo + m, n)
            got = read_rows(lo, hi) if hi > lo else None
            cache[lo] = _pad_rows(got, hi - lo if hi > lo else 0, m, n_features, has_sigma, fill)
        return cache[lo]

    def array(pos: int, shape):
        ndim = len(shape)

        def cb(index):
            sl = _rows_of(index, ndim)
            return rows(int(sl.start or 0))[pos]

        return jax.make_array_from_callback(shape, NamedSharding(mesh, _spec(ndim)), cb)

    x_shape = (total,) if n_features == 1 else (n_features, total)
    x = array(0, x_shape)
    y = array(1, (total,))
    sigma = array(2, (total,)) if has_sigma else None
    cache.clear()
    return ShardedData(mesh, x, y, sigma, n, m, int(execution.per_device_batch))


def _pad_rows(got, k: int, m: int, n_features: int, has_sigma: bool, fill: tuple) -> tuple:
    """Exactly ``m`` rows: the ``k`` real ones, then copies of the fill values."""
    fx, fy, fs = fill
    x = np.empty((m,) if n_features == 1 else (n_features, m), np.float64)
    y = np.empty(m, np.float64)
    s = np.empty(m, np.float64) if has_sigma else None
    if k:
        gx, gy, gs = got
        x[..., :k] = np.asarray(gx, np.float64)
        y[:k] = np.asarray(gy, np.float64)
        if has_sigma:
            s[:k] = np.asarray(gs, np.float64)
    if k < m:
        x[..., k:] = np.asarray(fx, np.float64).reshape((-1, 1) if n_features > 1 else ())
        y[k:] = fy
        if has_sigma:
            s[k:] = fs
    return x, y, s


def lay_out_arrays(x, y, sigma, execution: Execution) -> ShardedData:
    """In-memory data (this process holds it all) sharded over ``execution``'s devices."""
    x = np.asarray(x)
    y = np.asarray(y)
    sigma = None if sigma is None else np.asarray(sigma)
    n = int(y.shape[0])
    fill = (x[..., n - 1], y[n - 1], None if sigma is None else sigma[n - 1])  # edge values, as the one-device layout
    return lay_out_rows(
        lambda lo, hi: (x[..., lo:hi], y[lo:hi], None if sigma is None else sigma[lo:hi]),
        n, 1 if x.ndim == 1 else x.shape[0], sigma is not None, fill, execution,
    )


# -- the compiled, sharded loop -----------------------------------------------------------
class Carry(NamedTuple):
    state: TRState
    started: jax.Array  # False until the pass at p0 has run


def initial_carry(p0, lower, upper, settings: TRSettings) -> Carry:
    """The loop's state before the first pass, built on the host: iteration 0 evaluates
    ``p0`` and replaces every field with ``tr_init``'s, so only shapes and dtypes matter
    here (and finite values, as the discarded first proposal is computed from them)."""
    p0 = np.asarray(p0, np.float64)
    shapes = jax.eval_shape(
        lambda p, lo, hi, st: tr_init(p, zero_normal_eqs(p.shape[0]), lo, hi, st), p0, lower, upper, settings
    )
    s = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes)
    ones = np.ones_like(p0)
    s = s._replace(p=p0.copy(), scale_inv=ones, radius=np.ones_like(s.radius), status=np.asarray(RUNNING, np.int32))
    return Carry(s, np.asarray(False))


# The two passes a sharded fit can run (as one device's run_loop): the normal equations,
# until a pass finds them too ill-conditioned, then the TSQR factor of J for good.
GRAM, QR = "gram", "qr"


def drive_segment(evaluate, carry: Carry, p0, lower, upper, settings: TRSettings, stop_nfev, factor: str = GRAM) -> Carry:
    """The shared trust-region loop (:func:`~.loop.drive_from`) from ``carry`` until the fit
    stops or ``nfev`` reaches ``stop_nfev`` (run-time: segments share one program).

    ``factor=GRAM``: ``evaluate`` gives normal equations, and the segment also stops (status
    still RUNNING) on a pass that finds them ill-conditioned. ``factor=QR``: ``evaluate``
    gives TSQR factors; a carry that has not ``started`` is the GRAM state the fit switched
    from (``p0`` is its point), continued as :func:`~.loop.drive` continues a state."""
    if factor == GRAM:
        return Carry(*drive_from(evaluate, tuple(carry), p0, lower, upper, settings, stop_nfev=stop_nfev,
                                 stop_when_ill=True))
    before = carry.state
    first = lambda neq: continue_state(tr_init(p0, neq, lower, upper, settings), before)  # noqa: E731
    return Carry(*drive_from(evaluate, tuple(carry), p0, lower, upper, settings, stop_nfev=stop_nfev, first=first))


def switch_to_qr(carry: Carry) -> Carry:
    """The GRAM segment's carry that stopped on ill-conditioned normal equations, ready for
    the QR segments (the first of which re-evaluates its point with TSQR)."""
    return Carry(carry.state._replace(gram_ill=np.asarray(False)), np.asarray(False))


def _tile_partials(reduction, params, x, y, sigma, n_valid, tile: int, f_scale):
    """The reduction's partial of each ``tile``-row tile of this device's rows (stacked on a
    leading axis). Rows at or past ``n_valid`` are padding. :func:`plan_devices` makes
    ``tile`` divide the rows; otherwise (an ``Execution`` made by hand) the last tile is
    taken flush with the end and its already-counted rows are masked (``tile_partial``)."""
    rows = y.shape[0]
    size = min(int(tile), rows)
    n_tiles = -(-rows // size)
    return lax.map(lambda j: tile_partial(reduction, params, x, y, sigma, n_valid, size, j, f_scale),
                   jnp.arange(n_tiles))


def _sharded_pass(reduction, tile: int, mesh: Mesh, x_ndim: int, has_sigma: bool):
    """``(p, f_scale, n_valid, x, y[, sigma]) -> reduction``: each device computes the
    partials of its own tiles; all tiles' partials (a few p x p arrays each) are then folded
    with ``reduction.combine`` in global tile order, from ``reduction.zero``, skipping tiles
    with no real point. The tiles are the same row ranges for any device count (the batch
    does not depend on it, see :func:`per_device_batch`), so the pass, and the fit, are
    bit-identical on 2 or 4 devices."""
    replicated = NamedSharding(mesh, P())

    def local(p, f_scale, n_valid, x, y, *sigma):
        rows = y.shape[0]
        nv = jnp.clip(n_valid - lax.axis_index(AXIS) * rows, 0, rows)
        return _tile_partials(reduction, p, x, y, sigma[0] if sigma else None, nv, tile, f_scale)

    in_specs = (P(), P(), P(), _spec(x_ndim), P(AXIS)) + ((P(AXIS),) if has_sigma else ())
    # check_vma off: the per-device partials are declared varying by out_specs anyway.
    smap = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(AXIS), check_vma=False)

    def evaluate(p, f_scale, n_valid, *data):
        parts = jax.lax.with_sharding_constraint(smap(p, f_scale, n_valid, *data), replicated)

        def fold(acc, part):
            new = reduction.combine(acc, part)
            return jax.tree.map(lambda a, b: jnp.where(part.count > 0, a, b), new, acc), None

        acc, _ = lax.scan(fold, reduction.zero(p.shape[0]), parts)
        return acc

    return evaluate


def _sharded_sst(mesh: Mesh):
    """:math:`\\sum (y - \\bar y)^2` over the real points, per device then folded in order."""

    def local(y, n_valid, mean):
        rows = y.shape[0]
        nv = jnp.clip(n_valid - lax.axis_index(AXIS) * rows, 0, rows)
        return centered_sum_squares(y, nv, mean)[None]

    smap = jax.shard_map(local, mesh=mesh, in_specs=(P(AXIS), P(), P()), out_specs=P(AXIS), check_vma=False)

    def sst(y, n_valid, mean):
        parts = smap(y, n_valid, mean)
        acc = jnp.zeros((), parts.dtype)
        for i in range(mesh.size):
            acc = acc + parts[i]
        return acc

    return sst


_compiled: dict[Any, Any] = {}
_compiled_lock = threading.Lock()
_COMPILED_MAX = 32


def _segment_program(fn, loss: str, tile: int, mesh: Mesh, x_ndim: int, has_sigma: bool, factor: str = GRAM):
    """The segment program ``(carry, p0, lower, upper, settings, f_scale, n_valid,
    stop_nfev, x, y[, sigma]) -> (carry, sst)`` for one mesh and pass (jitted, not yet compiled)."""
    reduction = NormalEquationsPass(fn, loss) if factor == GRAM else LeastSquaresFactorPass(fn, loss)
    evaluate = _sharded_pass(reduction, tile, mesh, x_ndim, has_sigma)
    sst_of = _sharded_sst(mesh)

    def segment(carry, p0, lower, upper, settings, f_scale, n_valid, stop_nfev, x, y, *sigma):
        c = drive_segment(lambda p: evaluate(p, f_scale, n_valid, x, y, *sigma), carry, p0, lower, upper,
                          settings, stop_nfev, factor)
        count = jnp.maximum(c.state.neq.count, 1.0)
        return c, sst_of(y, n_valid, c.state.neq.sum_y / count)

    return jax.jit(segment, out_shardings=NamedSharding(mesh, P()))


def _compile(fn, loss: str, data: "ShardedData", args, factor: str = GRAM) -> tuple[Any, float]:
    """The compiled segment program of pass ``factor`` for these argument shapes (cached);
    ``(executable, compile_s)``."""
    shapes = tuple((tuple(np.shape(a)), str(np.asarray(a).dtype) if not isinstance(a, jax.Array) else str(a.dtype))
                   for a in jax.tree.leaves(args))
    key = (fn, loss, int(data.tile), data.mesh, data.x.ndim, data.sigma is not None, shapes, factor)
    with _compiled_lock:
        exe = _compiled.get(key)
    if exe is not None:
        return exe, 0.0
    t0 = time.perf_counter()
    prog = _segment_program(fn, loss, int(data.tile), data.mesh, data.x.ndim, data.sigma is not None, factor)
    exe = prog.lower(*args).compile(compiler_options=COMPILER_OPTIONS)
    compile_s = time.perf_counter() - t0
    with _compiled_lock:
        if len(_compiled) >= _COMPILED_MAX:
            _compiled.pop(next(iter(_compiled)))
        _compiled[key] = exe
    return exe, compile_s


def _to_host(tree):
    """A replicated global array tree as numpy (each process reads its own copy)."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else np.asarray(a), tree)


# -- checkpoints ----------------------------------------------------------------------------
def carry_to_state(carry: Carry, factor: str = GRAM) -> dict[str, Any]:
    """The loop state (and the pass it runs on) as the flat dict a
    :class:`~.checkpoint.CheckpointSink` stores."""
    leaves = jax.tree.leaves(carry)
    out: dict[str, Any] = {f"leaf{i:03d}": np.asarray(v) for i, v in enumerate(leaves)}
    out["kind"] = "sharded-loop"
    out["n_leaves"] = len(leaves)
    out["factor_pass"] = factor
    return out


def state_to_carry(state: dict[str, Any], like: Carry) -> Carry:
    leaves, treedef = jax.tree.flatten(like)
    if state.get("kind") != "sharded-loop" or int(state.get("n_leaves", -1)) != len(leaves):
        raise ValueError("the checkpoint is not a sharded-loop state of this problem")
    new = [np.asarray(state[f"leaf{i:03d}"]).astype(np.asarray(v).dtype).reshape(np.shape(v)) for i, v in enumerate(leaves)]
    return jax.tree.unflatten(treedef, new)


def _load_for_all(checkpoint, fingerprint: str, like: Carry) -> tuple[Carry, bool, str]:
    """Process 0 loads the latest checkpoint and every process gets the same carry and pass."""
    n_proc = jax.process_count()
    loaded, factor = None, GRAM
    if jax.process_index() == 0 and checkpoint is not None:
        st = checkpoint.load_latest(fingerprint)
        if st is not None:
            loaded, factor = state_to_carry(st, like), str(st.get("factor_pass", GRAM))
    if n_proc == 1:
        return (like, False, GRAM) if loaded is None else (loaded, True, factor)
    from jax.experimental import multihost_utils

    flag = multihost_utils.broadcast_one_to_all(np.int32(0 if loaded is None else 1 if factor == GRAM else 2))
    if not int(flag):
        return like, False, GRAM
    src = loaded if loaded is not None else like
    got = multihost_utils.broadcast_one_to_all(jax.tree.map(np.asarray, src))
    return jax.tree.map(np.asarray, got), True, GRAM if int(flag) == 1 else QR


# -- running --------------------------------------------------------------------------------
def run_sharded(
    fn,
    data: ShardedData,
    p0,
    lower,
    upper,
    options: SolverOptions,
    param_names: Sequence[str],
    *,
    strategy: str,
    execution: Execution,
    checkpoint=None,
    fingerprint: str = "",
    every: int | None = None,
    progress=None,
) -> FitResult:
    """Fit on sharded data. Without ``checkpoint`` the whole loop is one compiled call;
    with one, it runs in segments of ``every`` passes (default 1) and process 0 saves the
    state after each; a saved state of the same ``fingerprint`` is resumed from."""
    p0 = np.asarray(p0, np.float64)
    lower = np.asarray(lower, np.float64)
    upper = np.asarray(upper, np.float64)
    settings = as_settings(options, p0.shape[0])
    args_data = (data.x, data.y) + (() if data.sigma is None else (data.sigma,))
    carry = initial_carry(p0, lower, upper, settings)
    resumed, factor = False, GRAM
    if checkpoint is not None:
        carry, resumed, factor = _load_for_all(checkpoint, fingerprint, carry)
    cap = int(settings.max_nfev) + 1
    step = cap if checkpoint is None else max(1, int(every or 1))
    n_valid, f_scale = np.int64(data.n_valid), np.float64(options.f_scale)

    def segment_start():  # the QR segments start from the point the fit switched at
        return p0 if factor == GRAM else np.asarray(carry.state.p)

    compile_s = 0.0
    exe = None
    t0 = time.perf_counter()
    saves = 0
    while True:  # bounded: every segment adds >= 1 pass, switches pass (once) or stops the fit
        if exe is None:
            exe, c_s = _compile(fn, options.loss, data, (carry, segment_start(), lower, upper, settings, f_scale,
                                                         n_valid, np.int32(0)) + args_data, factor)
            compile_s += c_s
        nfev = int(np.asarray(carry.state.nfev))
        stop = np.int32(min(cap, nfev + step))
        out, sst = exe(carry, segment_start(), lower, upper, settings, f_scale, n_valid, stop, *args_data)
        carry, sst = _to_host((out, sst))
        switch = factor == GRAM and int(carry.state.status) == RUNNING and bool(carry.state.gram_ill)
        if switch:  # the normal equations lost too many digits: continue on the TSQR factor of J
            carry, factor, exe = switch_to_qr(carry), QR, None
        done = int(carry.state.status) != RUNNING or int(carry.state.nfev) >= cap
        if checkpoint is not None and jax.process_index() == 0:
            checkpoint.save(carry_to_state(carry, factor), fingerprint=fingerprint)
            saves += 1
        if progress is not None:
            n_chunks = max(1, -(-data.n_valid // max(1, data.tile)))
            progress(ProgressEvent("pass", int(carry.state.nfev), n_chunks - 1, n_chunks,
                                   float(carry.state.neq.cost), int(carry.state.nit)))
        if done or (int(carry.state.nfev) <= nfev and not switch):
            break
    run_s = time.perf_counter() - t0
    result = build_result(
        carry.state, float(sst), options=options, param_names=param_names, lower=lower, upper=upper,
        strategy=strategy, timings={"compile_s": compile_s, "run_s": run_s},
    )
    result.execution = execution.to_dict()
    if checkpoint is not None:
        result.checkpoints = {"resumed": resumed, "saved": saves, "every_passes": step,
                              "writer": "process 0" if execution.n_processes > 1 else "this process"}
    return result


def fit_sharded_arrays(fn, x, y, sigma, p0, lower, upper, options: SolverOptions, param_names, *, strategy: str,
                       execution: Execution, progress=None) -> FitResult:
    """Shard in-memory data over ``execution``'s devices and fit (the front door's hook)."""
    t0 = time.perf_counter()
    data = lay_out_arrays(x, y, sigma, execution)
    placed = time.perf_counter() - t0
    result = run_sharded(fn, data, p0, lower, upper, options, param_names, strategy=strategy,
                         execution=execution, progress=progress)
    result.timings["placement_s"] = placed
    return result


__all__ = [
    "AXIS", "Execution", "ShardedData", "plan_devices", "per_device_batch", "shard_layout", "make_mesh", "lay_out_rows",
    "lay_out_arrays", "run_sharded", "fit_sharded_arrays", "drive_segment", "initial_carry",
    "carry_to_state", "state_to_carry", "MIN_ROWS_PER_DEVICE",
]
