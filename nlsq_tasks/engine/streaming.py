"""Streaming: the trust-region solver driven from Python, one data pass per iteration.

The data never needs to be in memory: a :class:`ChunkSource` yields blocks of at most
``chunk_size`` points and every pass accumulates the normal equations

.. math::

    \\mathrm{cost} = \\tfrac12\\sum_c \\sum_{i\\in c} \\rho(r_i^2),\\qquad
    J^TJ = \\sum_c J_c^T J_c,\\qquad J^Tr = \\sum_c J_c^T r_c

chunk by chunk, always in the same order, so a pass is bit-for-bit reproducible.

**Several radii per pass.** From the current point :math:`p_k` (whose normal equations the
previous pass produced) the sequential trust-region method would try a step of radius
:math:`\\Delta_k`, and on rejection a step of the shrunken radius the update rule gives,
and so on. Those K trial points depend only on :math:`p_k`'s normal equations and the
radius schedule (``trust_region.radius_schedule``), so one pass evaluates all K of them
(``jax.vmap`` over the parameter vectors inside the one compiled chunk function). The
update rule is then applied to the candidates in order until one is accepted. This
reproduces the standard solver's iterates exactly while a rejected step costs no pass of
its own; only K consecutive rejections cost a further pass.

**Adaptive trials** (``config.adaptive_trials``, on by default, also for config objects
without the attribute): after an iteration that
ended on its first try, the next pass evaluates only that first try (1 instead of K trial
points per chunk), betting on another acceptance; a rejection then costs one extra pass,
after which K tries are evaluated again. Same iterates either way; it trades passes for
compute per pass: worth it when the pass is compute-bound (data in the page cache, fast
disk), not when every read is expensive (object stores).

**Warm start** (``config.warm_start``): fit a reproducible subsample
(``source.sample(warm_start_points, seed)``) in memory with the standard solver and start
the passes from its solution. Trade-off: on a large data set this usually saves most of
the passes (each a full read of the data), because the subsample solution is already
within the final basin and close to the minimum; but the streaming iterates then no
longer reproduce the standard solver started from ``p0`` (the final minimum is the same
for a well-posed problem, the path is not), and a subsample too small to resolve a
feature of the model can land in another local minimum. It is off unless asked for.

**Checkpoints** (``checkpoint``: a :class:`~.checkpoint.CheckpointSink`): the state is a
flat dict of numpy arrays and scalars (trust-region state, the pass's trial points,
partial sums and chunk cursor, counters, warm-start seed, fingerprint), saved every
``config.checkpoint_every_chunks`` chunks and at every pass end. Because partial sums are
restored exactly and chunks come in the same order, a resumed fit ends bit-identical to
an uninterrupted one.

**Checkpointing an in-memory chunked fit**: the chunked strategy is one compiled
``while_loop`` with no host round-trip per iteration, so it is not checkpointed itself
(a per-iteration callback would cost it its speed). To make a long in-memory fit
resumable, run it as streaming over ``ArrayChunkSource(x, y, sigma, chunk_size)`` with a
sink: same iterates as the standard solver, one Python-driven pass per iteration.

Memory: one padded chunk plus K Jacobian blocks of ``chunk_size x n_params``; independent
of ``n_points``.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .progress import ProgressEvent
from ._stream_core import STATE_VERSION, ChunkError, StreamCore
from .checkpoint import CheckpointError, CheckpointSink, problem_fingerprint
from .finalize import build_result
from .result import FitResult
from .sources import ChunkSource, n_chunks
from .status import FitStatus

__all__ = ["run_streaming", "streaming_fingerprint", "ChunkError"]


def _cfg(config, name, default):
    return getattr(config, name, default) if config is not None else default


def streaming_fingerprint(fn, source: ChunkSource, p0, lower, upper, options, n_trial_radii: int,
                          model_fingerprint: str | None = None, adaptive: bool = False) -> str:
    """Identity of a streaming problem: what must match for a checkpoint to be resumable.

    Chunk size and the number of trial radii are part of it because they fix the
    summation order and the iterates."""
    if model_fingerprint is None:
        fp = getattr(fn, "fingerprint", None)
        model_fingerprint = fp() if callable(fp) else _callable_identity(fn)
    return problem_fingerprint(
        "streaming-v%d" % STATE_VERSION,
        model_fingerprint,
        source.fingerprint(),
        int(source.n_points),
        int(source.chunk_size),
        np.asarray(p0, dtype=np.float64).tobytes().hex(),
        np.asarray(lower, dtype=np.float64).tobytes().hex(),
        np.asarray(upper, dtype=np.float64).tobytes().hex(),
        repr(options),
        int(n_trial_radii),
        bool(adaptive),
    )


def _callable_identity(fn) -> str:
    code = getattr(fn, "__code__", None)
    body = code.co_code.hex() + repr(code.co_consts) if code is not None else ""
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}:{body}"


def run_streaming(
    fn: Callable,
    source: ChunkSource,
    p0,
    lower,
    upper,
    options,
    param_names,
    config=None,
    checkpoint: CheckpointSink | None = None,
    progress: Callable[[dict], None] | None = None,
    fingerprint: str | None = None,
    resume: str = "auto",
    executor: Callable | None = None,
) -> FitResult:
    """Fit ``fn(x, *p)`` to the data of ``source`` by streaming trust-region passes.

    ``config``: a ``StreamingConfig`` (or any object with its attributes; None = defaults:
    no warm start, 4 trial radii, ``max_nfev + 1`` passes, checkpoint every 100 chunks).
    ``resume``: ``"auto"`` (continue a checkpoint of this problem when there is one),
    ``"never"`` (fresh start, ignore what the sink holds) or ``"require"`` (error when
    there is no checkpoint to continue). ``fingerprint``: the model/preset identity the
    caller vouches for (default: derived from ``fn``). ``executor``: a factory
    ``executor(reduction, source, f_scale, check) -> HostExecutor`` (see :mod:`.passes`;
    default :class:`~.passes.SourceExecutor`, in process): where the chunks are evaluated.
    The fold, and so the result, is the same whichever executor runs the chunks.
    """
    if resume not in ("auto", "never", "require"):
        raise ValueError(f"resume={resume!r} is not allowed; use 'auto', 'never' or 'require'.")
    t0 = time.perf_counter()
    p0 = np.asarray(p0, dtype=np.float64)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), p0.shape).copy()
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), p0.shape).copy()
    if source.n_points <= 0:
        raise ChunkError(f"source: n_points={source.n_points}; a streaming fit needs at least one point.")
    K = int(_cfg(config, "n_trial_radii", 4))
    every = int(_cfg(config, "checkpoint_every_chunks", 100))
    max_evals = options.max_evaluations(p0.size)
    max_passes = int(min(_cfg(config, "max_passes", max_evals + 1), max_evals + 1))
    fp = streaming_fingerprint(fn, source, p0, lower, upper, options, K, fingerprint,
                               adaptive=bool(_cfg(config, "adaptive_trials", True)))

    adaptive = bool(_cfg(config, "adaptive_trials", True))
    core = StreamCore(fn, source, lower, upper, options, K, adaptive)
    state = None
    if checkpoint is not None and resume != "never":
        state = checkpoint.load_latest(fp)
        if state is not None and state.get("fingerprint") != fp:
            raise CheckpointError("checkpoint state does not carry this problem's fingerprint")
    if state is None and resume == "require":
        raise CheckpointError("resume='require' but the checkpoint sink holds no state for this problem.")

    timings: dict[str, float] = {}
    if state is None:
        p_start = p0
        warm = {}
        if _cfg(config, "warm_start", False):
            tw = time.perf_counter()
            p_start, warm = _warm_start(fn, source, p0, lower, upper, options, param_names,
                                        int(_cfg(config, "warm_start_points", 100_000)))
            timings["warm_start"] = time.perf_counter() - tw
        run = core.fresh(p_start, fp, warm)
    else:
        run = core.restore(state)
    resumed = state is not None

    def save():
        if checkpoint is not None:
            checkpoint.save(run.to_state(), fingerprint=fp)

    m = n_chunks(source)
    for _ in range(max_passes + 1):  # bounded: the +1 is pass 0 (evaluating the start point)
        if run.done:
            break
        since = 0
        passes = core.executor(executor, run.mode)
        for part in passes.partials(run.trials, run.cursor, y_moments=run.needs_y_moments):
            run.add_partial(part)
            since += 1
            if progress is not None:
                progress(ProgressEvent("pass", run.pass_index, part.index, m, run.current_cost, run.nit))
            if checkpoint is not None and since >= every and run.cursor < m:
                save()
                since = 0
        if run.points_seen != source.n_points:
            what = "nothing" if run.points_seen == 0 else f"{run.points_seen} points"
            raise ChunkError(f"pass {run.pass_index}: the source yielded {what} in {run.cursor} chunks, "
                             f"but says n_points={source.n_points}.")
        run.end_pass()
        if run.pass_index >= max_passes and not run.done:
            run.stop()  # build_result reports a still-running state as MAX_NFEV
        if progress is not None:
            progress(ProgressEvent("pass_end", run.pass_index - 1, m - 1, m, run.current_cost, run.nit))
        save()

    timings["streaming_s"] = time.perf_counter() - t0
    result = build_result(run.tr, run.sst(), options=options, param_names=list(param_names), lower=lower,
                          upper=upper, strategy="streaming", timings=timings)
    result.checkpoints = {"passes": run.pass_index, "trial_points_evaluated": run.n_trial_evals,
                          "n_trial_radii": K, "resumed": resumed, "enabled": checkpoint is not None}
    return result


def _warm_start(fn, source, p0, lower, upper, options, param_names, n):
    from .strategies import run_standard

    seed = 0
    sample = source.sample(min(n, source.n_points), seed)
    res = run_standard(fn, sample.x, sample.y, sample.sigma, p0, lower, upper, options, list(param_names))
    ok = bool(np.all(np.isfinite(res.popt))) and res.status != FitStatus.NONFINITE
    info = {"warm_seed": seed, "warm_points": int(np.asarray(sample.y).shape[0]), "warm_ok": int(ok)}
    return (np.asarray(res.popt, dtype=np.float64) if ok else p0), info
