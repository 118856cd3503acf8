"""``fit_batch``: one model fitted to K data sets in one compiled computation.

Order of work, as for a single fit: validate every argument and every data set (errors
name the data set, the argument and the value), plan (the same planner as :func:`~nlsq_tasks.fit`,
once per tolerance tier present in the batch, so every fit gets the options it would get
alone), then run the trust-region loop ``vmap``-ed over the sets (:mod:`._solver`), in
lanes refilled between rounds (sized by K and the memory budget), and build one :class:`~.result.BatchFitResult`.

Each fit in the batch equals the same fit done alone with :func:`~nlsq_tasks.fit` (same
start, bounds, tolerances, loss) to roundoff: the loop, the data pass and the covariance
are the single fit's own; only the amount of padding differs.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from .. import _validate as V
from .._fit_options import SOLVER_OPTIONS, FitOptions
from .._plan import UNBOUNDED, make_plan, model_fn, resolve_model_spec
from ..engine.loop import bucket_size
from ..engine.status import FitStatus
from ..engine.trust_region import as_settings
from ..workflow.tolerances import tolerance_tier
from . import _solver
from ._stack import Stack, build_stack, per_set
from .result import BatchFitResult, batched_covariance

# Fits per compiled call (lanes) at most. On a CPU the per-lane cost of a round grows with
# the lanes once their arrays leave the caches (measured, 1e4 x 100, us per lane and
# evaluation: 4.3 at 640 lanes, 4.7 at 2560, 6.5 at 5120, 7.2 at 10240; 1e5 fits: 8.8k
# fits/s at 13312 lanes, 15k at 2048), so more fits mean more rounds, not wider ones. An
# accelerator needs large blocks to fill it (Gpufit: 1e5 fits and more per call).
MAX_BLOCK_CPU = 2048
MAX_BLOCK_ACCELERATOR = 1 << 20
# Lanes (see _solver.solve_lanes): about K / LANE_FILLS of them, so that finished fits are
# replaced by waiting ones and only the last few rounds run part-empty; at least MIN_LANES
# (vectorization across fits needs some width; per-round host work is per call).
LANE_FILLS = 8
MIN_LANES = 256


def fit_batch(
    f,
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma: bool = False,
    check_finite: bool = True,
    bounds=UNBOUNDED,
    *,
    nan_policy: str | None = None,
    workflow: str = "auto",
    goal=None,
    memory_limit_gb: float | None = None,
    block_size: int | None = None,
    labels: Sequence[str] | None = None,
    invalid: str = "raise",
    **kwargs,
) -> BatchFitResult:
    """Fit ``f(x, *params)`` to each of K data sets; one compiled ``vmap`` over the sets.

    Parameters
    ----------
    f : as :func:`~nlsq_tasks.fit` (callable, Model, built-in name or expression).
    xdata : one x shared by every set (``(n,)`` or ``(k, n)``), a ``(K, n)`` / ``(K, k, n)``
        stack, or a list of K arrays (ragged lengths allowed).
    ydata : a ``(K, n)`` stack or a list of K 1-D arrays of any lengths. Ragged sets are
        padded to a size bucket of the longest and masked.
    p0 : None (each set starts from the model's guess on its own data, else a feasible
        default), one ``(P,)`` start for all, or ``(K, P)`` starts.
    sigma : None, one ``(n,)`` shared, a ``(K, n)`` stack or a list of K arrays.
    bounds : as :func:`~nlsq_tasks.fit` (shared), or ``(lower, upper)`` with ``(K, P)`` sides
        (per set). Left at the default, a built-in model's own bounds apply.
    nan_policy : None, 'raise' or 'omit' (per set: its non-finite points are dropped).
    block_size : lanes, the fits one compiled call runs side by side (a finished fit's
        lane takes the next waiting one between rounds); default: about K/8 (at least 256),
        no more than the memory budget allows (GPU memory on a GPU), at most 2048 on a
        CPU and 2**20 on an accelerator, split over every local device.
    labels : names of the data sets (file names...), used in the table.
    invalid : 'raise' (default: a set that cannot be fitted -- too few points, all NaN --
        raises) or 'skip' (its row gets status INVALID_INPUT and the error; the others fit).
    **kwargs : loss, f_scale, x_scale, max_nfev, ftol, xtol, gtol (as :func:`~nlsq_tasks.fit`).

    Returns
    -------
    BatchFitResult (``result[i]`` is the FitResult of set ``i``; ``result.to_table()``).
    """
    t0 = time.perf_counter()
    fit_options = FitOptions.coerce(kwargs, "fit_batch", allowed=SOLVER_OPTIONS).replace(strategy="standard")
    p0_rows = None if p0 is None else np.asarray(V._real_array("p0", p0))
    model = resolve_model_spec(f, None if p0_rows is None else p0_rows.reshape(-1, p0_rows.shape[-1])[0])
    names = list(model.param_names)
    n_params = len(names)
    stack = build_stack(xdata, ydata, sigma, check_finite=bool(check_finite), nan_policy=nan_policy,
                        n_params=n_params, invalid=invalid)
    k = stack.n_sets
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != k:
            raise V.FitInputError("labels", len(labels), f"labels has {len(labels)} names for {k} data sets.")
    if block_size is not None:
        block_size = V.check_positive_int("block_size", block_size)

    lower, upper, shared_bounds = _bounds(bounds, k, names)
    starts = per_set("p0", p0_rows, k, n_params, names)
    good = [i for i in range(k) if i not in stack.errors]

    # One plan per tolerance tier present: every fit gets the options its size gives alone.
    plans: dict[int, Any] = {}
    tols = np.zeros((k, 3))
    notes: list[str] = []
    # (tiers per distinct size, not per set: a Python call per set cost ~20 ms at K = 1e4)
    good_rows = np.asarray(good, np.int64)
    sizes, size_of = np.unique(stack.n_valid[good_rows], return_inverse=True)
    tiers = np.array([tolerance_tier(int(v)) for v in sizes])[size_of.ravel()]
    _, first_pos = np.unique(tiers, return_index=True)
    for pos in sorted(first_pos):  # the first set of each tier plans it, in the sets' order
        i, tier = int(good_rows[pos]), int(tiers[pos])
        plans[tier] = _plan_for(model, stack, i, starts, lower, upper, shared_bounds, bounds, workflow, goal,
                                memory_limit_gb, fit_options, absolute_sigma)
        if shared_bounds and lower is None:
            lower = np.broadcast_to(plans[tier].lower, (k, n_params)).copy()
            upper = np.broadcast_to(plans[tier].upper, (k, n_params)).copy()
        if plans[tier].n_starts > 1 or plans[tier].validate:
            notes.append("multi-start and the QUALITY validation pass are not run in a batch (one start per set).")
        o = plans[tier].options
        tols[good_rows[tiers == tier]] = (o.ftol, o.xtol, o.gtol)
    plan = plans[tolerance_tier(int(stack.n_valid[good[0]]))]
    options = plan.options

    if starts is None:
        starts = np.empty((k, n_params))
        for i in range(k):
            starts[i] = plan.p0 if i in stack.errors else _guess(model, *stack.set_xy(i), lower[i], upper[i])
    else:
        _check_starts(starts, lower, upper, names)
        starts = V.into_bounds(starts, lower, upper)
    if starts is not None and stack.errors:
        starts[list(stack.errors)] = np.clip(plan.p0, lower[list(stack.errors)], upper[list(stack.errors)])
    t_prep = time.perf_counter() - t0

    settings = as_settings(options, n_params)
    out, blocks, timings = _run_blocks(model_fn(model), options.loss, stack, starts, lower, upper, tols,
                                       options.f_scale, int(settings.max_nfev), settings.x_scale, block_size,
                                       memory_limit_gb, n_params)
    result = _assemble(out, stack, names, lower, upper, tols, options, absolute_sigma, labels)
    result.blocks = blocks
    result.notes = list(dict.fromkeys(notes))
    result.timings = {"prepare": t_prep, **timings, "total": time.perf_counter() - t0}
    _warn_undetermined(result)
    return result


def _bounds(bounds, k: int, names: list[str]):
    """(lower, upper, shared): per-set ``(K, P)`` sides are taken here; shared bounds
    (including the model's defaults) are resolved by the planner (lower/upper None)."""
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2 and any(np.ndim(b) == 2 for b in bounds):
        lo = per_set("bounds[0] (lower)", bounds[0], k, len(names), names)
        hi = per_set("bounds[1] (upper)", bounds[1], k, len(names), names)
        if np.isnan(lo).any() or np.isnan(hi).any():
            raise V.FitInputError("bounds", "NaN", "bounds must not hold NaN.")
        bad = np.argwhere(lo >= hi)
        if bad.size:
            i, j = bad[0]
            raise V.FitInputError(
                "bounds", (float(lo[i, j]), float(hi[i, j])),
                f"data set {i}: the lower bound of parameter '{names[j]}' must be strictly less than its upper bound.",
            )
        return lo, hi, False
    return None, None, True


def _check_starts(starts, lower, upper, names) -> None:
    if not np.all(np.isfinite(starts)):
        i, j = np.argwhere(~np.isfinite(starts))[0]
        raise V.FitInputError("p0", float(starts[i, j]), f"p0 must be finite; data set {i}, parameter '{names[j]}'.")
    out = np.argwhere((starts < lower) | (starts > upper))
    if out.size:
        i, j = out[0]
        raise V.FitInputError(
            "p0", float(starts[i, j]),
            f"p0 is outside the bounds for data set {i}: parameter '{names[j]}' = {float(starts[i, j])!r} "
            f"(allowed: {float(lower[i, j])!r} <= {names[j]} <= {float(upper[i, j])!r}).",
        )


def _plan_for(model, stack: Stack, i, starts, lower, upper, shared_bounds, bounds, workflow, goal, memory_limit_gb,
              fit_options, absolute_sigma):
    """The single-fit plan of set ``i`` (validates options, model and bounds; probes the model)."""
    x_i, y_i = stack.set_xy(i)
    probe = x_i[..., : V.PROBE_POINTS]
    return make_plan(
        model, probe=probe, guess_xy=(x_i, y_i), n_points=int(stack.n_valid[i]), n_features=stack.n_features,
        p0=None if starts is None else starts[i],
        bounds=bounds if shared_bounds else (lower[i], upper[i]),
        method=None, workflow=workflow, goal=goal, memory_limit_gb=memory_limit_gb,
        options=fit_options,
        absolute_sigma=absolute_sigma, covariance=False,
    )


def _guess(model, x, y, lower, upper) -> np.ndarray:
    """The start a single fit takes when p0 is None: the model's guess moved inside the
    bounds, else a feasible default (as the planner does)."""
    guess = getattr(model, "guess", None)
    if callable(guess):
        try:
            p = guess(x, y)
        except Exception:  # advice, not a result: fall back as the planner does
            p = None
        if p is not None:
            p = np.asarray(p, dtype=np.float64).ravel()
            if p.shape == lower.shape and np.all(np.isfinite(p)):
                return V.into_bounds(p, lower, upper)
    return V.feasible_start(lower, upper)


def block_plan(k: int, n_points: int, n_params: int, n_features: int, block_size: int | None,
               memory_limit_gb: float | None) -> dict[str, Any]:
    """How many fits go into one compiled call: the request, else what the memory budget
    allows (``MemoryBudget`` of one padded set, times the block), a size bucket of ``K``
    at most (so nearby batch sizes share an executable), a multiple of the device count."""
    from ..workflow import MemoryBudget
    from ..workflow.budget import RUNTIME_ALLOWANCE_BYTES

    import jax

    devices = _solver.n_devices()
    backend = jax.default_backend()
    budget = MemoryBudget.compute(n_points=n_points, n_params=n_params, n_features=n_features,
                                  memory_limit_gb=memory_limit_gb, use_gpu=backend == "gpu")
    cap = MAX_BLOCK_CPU if backend == "cpu" else MAX_BLOCK_ACCELERATOR
    gb = float(1 << 30)
    # One fit's share of the peak: its data, Jacobian and residuals (the budget's formula
    # without the once-per-process runtime allowance), plus the trust-region state.
    per_fit = budget.peak_gb * gb - RUNTIME_ALLOWANCE_BYTES + 64 * n_params * n_params * 8
    room = max(budget.threshold_gb * gb - RUNTIME_ALLOWANCE_BYTES, per_fit)
    by_memory = 1 << max(0, int(room // per_fit).bit_length() - 1)  # a power of two: stable shapes
    if block_size is not None:
        size, why = block_size, "requested"
    else:
        lanes = max(MIN_LANES, bucket_size(-(-k // LANE_FILLS)))
        size = min(bucket_size(k), by_memory, cap, lanes)
        why = ("memory budget" if size == by_memory else "batch size" if size == bucket_size(k)
               else "lanes" if size == lanes else "block cap")
    size = max(devices, -(-size // devices) * devices)
    return {"block_size": int(size), "n_blocks": -(-k // size), "devices": devices, "reason": why,
            "fits_per_block_by_memory": by_memory}


def _run_blocks(fn, loss, stack: Stack, starts, lower, upper, tols, f_scale, max_nfev, x_scale, block_size,
                memory_limit_gb, n_params):
    k = stack.n_sets
    blocks = block_plan(k, int(stack.y.shape[1]), n_params, stack.n_features, block_size, memory_limit_gb)
    out, t = _solver.solve_lanes(
        fn, loss, stack.tile, blocks["block_size"], starts, lower, upper, stack.x, stack.y, stack.sigma,
        stack.n_valid, tols, f_scale, max_nfev, x_scale,
    )
    blocks["rounds"] = t["rounds"]
    return out, blocks, {"compile": t["compile_s"], "run": t["run_s"]}


def _assemble(out, stack: Stack, names, lower, upper, tols, options, absolute_sigma, labels) -> BatchFitResult:
    s, neq = out.state, out.state.neq
    k = stack.n_sets
    status = np.asarray(s.status, np.int64).copy()
    status[status == int(FitStatus.RUNNING)] = int(FitStatus.MAX_NFEV)  # the loop only exits stopped; be explicit
    n_points = np.rint(np.asarray(neq.count)).astype(np.int64)
    pcov, undetermined, condition = batched_covariance(np.asarray(neq.R), np.asarray(neq.cost), n_points,
                                                       bool(absolute_sigma))
    popt = np.array(s.p, np.float64)
    bad = sorted(stack.errors)
    if bad:
        status[bad] = int(FitStatus.INVALID_INPUT)
        popt[bad] = np.nan
        pcov[bad] = np.nan
        undetermined[bad] = False
    return BatchFitResult(
        param_names=list(names), popt=popt, pcov=pcov, status=status,
        nfev=np.asarray(s.nfev, np.int64), njev=np.asarray(s.njev, np.int64), nit=np.asarray(s.nit, np.int64),
        cost=np.asarray(neq.cost, np.float64), chi2=np.asarray(neq.chi2, np.float64),
        ssr=np.asarray(neq.ssr, np.float64), sst=np.asarray(out.sst, np.float64), n_points=n_points,
        grad_norm=np.asarray(s.g_norm, np.float64), lower=np.asarray(lower, np.float64),
        upper=np.asarray(upper, np.float64), n_omitted=stack.omitted.copy(), errors=dict(stack.errors),
        labels=labels, loss=options.loss, tolerances=tols, undetermined=undetermined, condition=condition,
    )


def _warn_undetermined(result: BatchFitResult) -> None:
    """One OptimizeWarning for the batch (not K), naming fits and parameters whose
    variances are inf because the data do not determine them (each fit's own warnings and
    the table's warnings column say it per fit)."""
    import warnings

    from .._warnings import optimize_warning

    rows = np.flatnonzero(result.undetermined.any(axis=1)) if result.undetermined is not None else []
    if len(rows) == 0:
        return
    labels = result.labels if result.labels is not None else [str(i) for i in range(len(result))]
    shown = "; ".join(f"{labels[i]}: {result.undetermined_names(i)}" for i in rows[:5])
    more = f" (and {len(rows) - 5} more)" if len(rows) > 5 else ""
    warnings.warn(f"{len(rows)} of {len(result)} fits have parameters not determined by the data (their variances "
                  f"are inf): {shown}{more}.", optimize_warning(), stacklevel=3)
