"""Multi-start: run the local solver from many starting points and keep the best minimum.

**Starting points.** ``n_starts - 1`` points of a seeded scrambled Sobol sequence
(``sampler="sobol"``, see :mod:`._sobol`) or a Latin hypercube (``sampler="lhs"``) in
``[0, 1)^P`` are mapped into a search box; ``p0`` is always start 0. The box of a
parameter is

* ``[lower, upper]`` when both bounds are finite;
* when ``lower >= 0``, ``upper = inf`` and ``p0 > 0`` (rates, widths, amplitudes): the
  log-range ``[max(lower, p0/100), 100 p0]``, sampled uniformly in :math:`\\log p`, so that
  scales two decades either side of the guess are tried as often as each other;
* otherwise ``[p0 - w, p0 + w] \\cap [lower, upper]`` with :math:`w = \\max(10|p_0|, 1)`.

**Standard strategy.** All starts are solved together by the core's
:func:`~.strategies.solve_batch`: the trust-region loop ``jax.vmap``-ed over the start
point, on data laid out exactly as :func:`~.strategies.run_standard` lays it out, so the
whole batch is one compiled computation (a batched ``while_loop`` runs until the slowest
start stops; the others are frozen meanwhile). The best start's result is built from its
batched final state (no extra solve).

**Chunked and streaming strategies.** A full-data solve per start would cost a full read
of the data per iteration per start, so starts are *screened* on a reproducible subsample
(``screen_points`` points; ``source.sample`` out of core) with the batched in-memory
solver, and the ``n_refine`` best screened minima are refined on the full data with the
chunked or streaming solver. The best refined fit is returned.

Every start's outcome is recorded in ``FitResult.starts`` as a dict
``{start, popt, cost, status, nfev, stage}`` where ``stage`` is ``"full"`` (cost on all
the data) or ``"screen"`` (cost on the subsample only).

Checkpoints (streaming): each refinement is its own problem (its own start), so it gets its
own location ``checkpoint.child("refine-<rank>")``; screening is cheap and deterministic and
is simply redone on a restart, after which every refinement resumes from its own location.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import jax
import numpy as np

from ._sobol import MAX_SOBOL_DIM, SAMPLERS, latin_hypercube, sobol
from .finalize import build_result
from .result import FitResult
from .status import FitStatus
from .strategies import solve_batch

__all__ = ["run_multistart", "make_starts", "search_box"]

LOG_DECADES = 2.0


def search_box(p0, lower, upper):
    """``(lo, hi, log)``: the finite box starts are drawn from; ``log`` marks log-uniform axes."""
    p0 = np.asarray(p0, dtype=np.float64)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), p0.shape)
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), p0.shape)
    lo, hi = lower.copy(), upper.copy()
    log = np.zeros(p0.shape, bool)
    both = np.isfinite(lower) & np.isfinite(upper)
    positive = ~both & np.isfinite(lower) & (lower >= 0) & ~np.isfinite(upper) & (p0 > 0)
    lo[positive] = np.maximum(lower[positive], p0[positive] / 10**LOG_DECADES)
    hi[positive] = p0[positive] * 10**LOG_DECADES
    log[positive] = lo[positive] > 0
    rest = ~both & ~positive
    w = np.maximum(10.0 * np.abs(p0), 1.0)
    lo[rest] = np.maximum(lower[rest], p0[rest] - w[rest])
    hi[rest] = np.minimum(upper[rest], p0[rest] + w[rest])
    return lo, hi, log


def make_starts(p0, lower, upper, n_starts: int, seed: int = 0, sampler: str = "sobol") -> np.ndarray:
    """``(n_starts, P)`` starting points; row 0 is ``p0``."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not allowed; use one of {SAMPLERS}.")
    if int(n_starts) < 1:
        raise ValueError(f"n_starts={n_starts} is not allowed; use an integer >= 1.")
    p0 = np.asarray(p0, dtype=np.float64)
    P = p0.size
    lo, hi, log = search_box(p0, lower, upper)
    k = int(n_starts) - 1
    if sampler == "sobol" and P > MAX_SOBOL_DIM:
        raise ValueError(f"sampler='sobol' supports up to {MAX_SOBOL_DIM} parameters, got {P}; use sampler='lhs'.")
    u = sobol(k, P, scramble=True, seed=seed) if sampler == "sobol" else latin_hypercube(k, P, seed=seed)
    with np.errstate(divide="ignore"):
        lin = lo + u * (hi - lo)
        lg = np.exp(np.log(np.where(log, lo, 1.0)) + u * (np.log(np.where(log, hi, 1.0)) - np.log(np.where(log, lo, 1.0))))
    pts = np.where(log, lg, lin)
    return np.vstack([p0[None, :], pts])


def run_multistart(
    fn: Callable,
    x,
    y,
    sigma,
    p0,
    lower,
    upper,
    options,
    param_names,
    n_starts: int,
    seed: int = 0,
    sampler: str = "sobol",
    strategy: str = "standard",
    chunk_size: int | None = None,
    source=None,
    *,
    n_refine: int = 3,
    screen_points: int = 20_000,
    config=None,
    checkpoint=None,
    progress=None,
) -> FitResult:
    """Fit from ``n_starts`` starting points (``p0`` included) and return the best fit.

    ``strategy="standard"``: in-memory, batched. ``"chunked"``: in-memory data too large
    for one Jacobian; ``chunk_size`` required. ``"streaming"``: ``source`` (a ChunkSource)
    required, ``x, y, sigma`` ignored. ``checkpoint``/``config``/``progress`` go to the
    streaming refinements (each refinement gets its own fingerprint, because p0 differs).
    """
    from ..strategies import Problem, get_strategy, strategy_names

    if strategy not in strategy_names():
        raise ValueError(f"strategy={strategy!r} is not allowed; use one of {strategy_names()}.")
    spec = get_strategy(strategy)
    t0 = time.perf_counter()
    starts = make_starts(p0, lower, upper, n_starts, seed, sampler)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), starts.shape[1:])
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), starts.shape[1:])
    names = list(param_names)

    if spec.refine is None:  # every start on the full data, in one batched computation
        batch = batched_solve(fn, x, y, sigma, starts, lower, upper, options)
        records = [_record(s, o, "full") for s, o in zip(starts, batch.outcomes())]
        best = int(np.argmin([r["cost"] for r in records]))
        result = batch.result(best, options, names, lower, upper)
    else:
        if spec.in_memory:
            if chunk_size is None:
                raise ValueError(f"strategy={strategy!r} needs chunk_size (an integer >= 1).")
            sx, sy, ss = _subsample_arrays(x, y, sigma, screen_points, seed)
        else:
            if source is None:
                raise ValueError(f"strategy={strategy!r} needs source (a ChunkSource).")
            ch = source.sample(min(screen_points, source.n_points), seed)
            sx, sy, ss = ch.x, ch.y, ch.sigma
        batch = batched_solve(fn, sx, sy, ss, starts, lower, upper, options)
        records = [_record(s, o, "screen") for s, o in zip(starts, batch.outcomes())]
        order = np.argsort([r["cost"] if math.isfinite(r["cost"]) else math.inf for r in records], kind="stable")
        refined = []
        warn = None
        if not spec.in_memory and checkpoint is not None and not callable(getattr(checkpoint, "child", None)):
            # Refinements start from different points, i.e. are different problems: one
            # location cannot hold all of them (the newest would refuse the others).
            warn = (f"multi-start {strategy} refinements ran without checkpoints: the checkpoint sink has no "
                    "child(name) to give each refinement its own location")
        problem = Problem(fn, x, y, sigma, source, None, lower, upper, options, names, chunk_size, config=config,
                          checkpoint=None if warn else checkpoint, progress=progress)
        for rank, i in enumerate(order[: max(1, int(n_refine))]):
            start = np.asarray(records[i]["popt"]) if np.all(np.isfinite(records[i]["popt"])) else starts[i]
            res = spec.refine(problem, start, rank)
            records[i] = {**_record(starts[i], (res.popt, res.cost, res.status, res.nfev), "full"),
                          "screen_cost": records[i]["cost"]}
            refined.append((res.cost if math.isfinite(res.cost) else math.inf, int(i), res))
        _, best, result = min(refined, key=lambda t: (t[0], t[1]))
        if warn:
            result.extra_warnings.append(warn)

    result.starts = records
    result.timings["multistart"] = time.perf_counter() - t0
    return result


def _record(start, outcome, stage: str) -> dict:
    popt, cost, status, nfev = outcome
    status = FitStatus(int(status))
    return {"start": np.asarray(start, dtype=np.float64).tolist(), "popt": np.asarray(popt, dtype=np.float64).tolist(),
            "cost": float(cost) if np.isfinite(cost) else math.inf, "status": status.name, "nfev": int(nfev),
            "stage": stage}


def _subsample_arrays(x, y, sigma, n, seed):
    y = np.asarray(y)
    if y.shape[0] <= n:
        return x, y, sigma
    idx = np.sort(np.random.default_rng(seed).choice(y.shape[0], size=n, replace=False))
    x = np.asarray(x)
    xs = x[idx] if x.ndim == 1 else x[:, idx]
    ss = None if sigma is None else np.broadcast_to(np.asarray(sigma), y.shape)[idx]
    return xs, y[idx], ss


class BatchOutcome:
    """The stacked final states of a batched solve."""

    def __init__(self, out, compile_run_s: float):
        self.out = out
        self.seconds = compile_run_s
        st = out.state
        self.popt = np.asarray(st.p)
        self.cost = np.asarray(st.neq.cost)
        self.status = np.asarray(st.status)
        self.nfev = np.asarray(st.nfev)

    def outcomes(self):
        return [(self.popt[i], float(self.cost[i]), int(self.status[i]), int(self.nfev[i]))
                for i in range(self.popt.shape[0])]

    def result(self, i: int, options, names, lower, upper) -> FitResult:
        state = jax.tree_util.tree_map(lambda a: a[i], self.out.state)
        return build_result(state, float(self.out.sst[i]), options=options, param_names=names, lower=lower,
                            upper=upper, strategy="standard", timings={"batched_solve_s": self.seconds})


def batched_solve(fn, x, y, sigma, starts, lower, upper, options) -> BatchOutcome:
    """Solve from every row of ``starts`` in one compiled, vmapped computation (data in
    memory, laid out as the standard strategy does: see :func:`~.strategies.solve_batch`)."""
    t0 = time.perf_counter()
    out = solve_batch(fn, x, y, sigma, starts, lower, upper, options)
    return BatchOutcome(out, time.perf_counter() - t0)
