"""The front door: :func:`fit`, :func:`fit_source` and the SciPy-compatible :func:`curve_fit`.

Every public way into the solver passes through here, in this order:

1. **validate** every argument (:mod:`nlsq_tasks._validate`) before anything is traced;
   errors name the argument, the value and what is allowed;
2. **resolve** the model (callable, built-in name or expression), the goal and the preset;
3. **choose tolerances**: explicit keyword > preset > :func:`calculate_adaptive_tolerances`;
4. **route**: the preset's fixed strategy, or for ``workflow="auto"`` the memory-budget
   selector's decision (standard / chunked / streaming), unless forced by ``strategy=``
   or ``method=``;
5. **run** the strategy (with multi-start and the QUALITY validation pass when the
   goal or preset asks for them) and record every choice on the :class:`FitResult`.

A covariance ``sigma`` (shape ``(n, n)``, ``C = L L^T``) couples every point with every
other, so it is fitted with the standard (all in memory) strategy only. Minimising
:math:`\\lVert L^{-1}(y - f(x; p))\\rVert^2` is fitting ``L^{-1} f`` to ``L^{-1} y`` with unit
weights: the standard solver does this itself; the front door does it for multi-start
screening and the validation pass, which take per-point sigma only.

``method``: ``None``/``"auto"`` leaves the routing to the workflow; ``"trf"`` and ``"lm"``
ask for the standard in-memory trust-region solver (SciPy's behaviour for those names),
and ``"lm"`` additionally requires infinite bounds, as in SciPy.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from . import _repeat
from . import _validate as V
from ._validate import FitInputError, FitTypeError, ModelEvaluationError
from ._fit_options import OPTION_NAMES, FitOptions
from ._fixed import split_fixed
from ._model_prep import engine_data
from ._plan import UNBOUNDED, Plan, make_plan, model_fn
from .engine.progress import ProgressEvent
from .engine.result import FitResult
from .engine.sources import ArrayChunkSource, ChunkSource
from .strategies import Problem, get_strategy

__all__ = [
    "fit", "fit_source", "curve_fit", "FiniteSource", "OptimizeWarning",
    "FitInputError", "FitTypeError", "ModelEvaluationError",
]

logger = logging.getLogger("nlsq_tasks")

inf = math.inf
# fit()'s keyword-only options (curve_fit passes them through by name): see _fit_options.
FIT_KWARGS = OPTION_NAMES


def fit(
    f,
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma: bool = False,
    check_finite: bool = True,
    bounds=UNBOUNDED,
    method: str | None = None,
    workflow: str = "auto",
    goal=None,
    memory_limit_gb: float | None = None,
    *,
    plan=None,
    strategy: str | None = None,
    chunk_size: int | None = None,
    loss: str | None = None,
    f_scale: float | None = None,
    x_scale="jac",
    max_nfev: int | None = None,
    ftol: float | None = None,
    xtol: float | None = None,
    gtol: float | None = None,
    n_starts: int | None = None,
    seed: int | None = None,
    validate: bool | None = None,
    devices: int | None = None,
    fixed=None,
    nan_policy: str | None = None,
    checkpoint=None,
    resume: bool = True,
    progress=None,
    **unknown,
) -> FitResult:
    """Fit ``f(x, *params)`` to ``(xdata, ydata)`` by (robust, bounded) nonlinear least squares.

    Minimises :math:`\\tfrac12 \\sum_i \\rho\\big(((y_i - f(x_i; p))/\\sigma_i)^2\\big)` over
    ``lower <= p <= upper`` with a trust-region reflective method, differentiating ``f``
    exactly with JAX forward-mode AD.

    Parameters
    ----------
    f : a callable ``f(x, *params)`` written with ``jax.numpy``, a :class:`~nlsq_tasks.models.Model`,
        a built-in model name (``"gaussian"``) or an expression string (``"a*exp(-b*x)+c"``).
    xdata : ``(n,)`` or ``(k, n)`` (``k`` features, SciPy's layout).
    ydata : ``(n,)``.
    p0 : initial parameters; default: the model's ``guess(x, y)`` when it has one, else a
        point inside the bounds (1 when unbounded, as SciPy).
    sigma : ``(n,)`` standard deviations or an ``(n, n)`` covariance matrix.
    absolute_sigma : if False, ``pcov`` is rescaled by the reduced chi-square (SciPy's default).
    check_finite : raise when the data hold NaN or inf (default True).
    bounds : ``(lower, upper)`` scalars or per-parameter sequences, ``scipy.optimize.Bounds``,
        or ``{name: (lower, upper)}``. Left at the default, a built-in model's own bounds apply.
    method : None/"auto" (routing by workflow), "trf" or "lm" (standard in-memory strategy;
        "lm" only without bounds).
    workflow : "auto" (memory-based), a preset name (see ``list_presets()``) or a preset YAML path.
    goal : an ``OptimizationGoal`` or its name (case-insensitive).
    memory_limit_gb : override the detected memory when choosing the strategy.

    Keyword-only: the plan and its decisions
        plan : a :class:`~nlsq_tasks.planning.FitPlan` (or its dict) from
            :func:`~nlsq_tasks.plan_fit`, run as it is: nothing is decided again. Passing
            it together with any decision below (or workflow/goal/memory_limit_gb/method)
            is refused.
        strategy : force a registered strategy (``nlsq_tasks.strategies.strategy_names()``:
            'standard', 'chunked', 'streaming').
        chunk_size : points per chunk for the chunked and streaming strategies (1e3..1e6).
        loss : a registered loss (``nlsq_tasks.engine.loss.loss_names()``; default 'linear');
            f_scale : the loss's scale.
        max_nfev : bound on function evaluations (None: 100 x n_params).
        ftol, xtol, gtol : convergence tolerances (explicit > preset > adaptive to n).
        n_starts, seed : multi-start (Sobol or LHS starts, p0 first).
        validate : run the QUALITY checks (default: when the goal is QUALITY or the preset asks).
        devices : at most this many devices (int >= 1); by default a standard or chunked fit
            shards its points over every visible device (see ``result.execution``).

    Keyword-only: the problem
        fixed : parameters held at a value and not fitted: ``{name: value}`` or names (held
            at their p0); equal lower and upper bounds fix a parameter too.

    Keyword-only: running
        x_scale : 'jac' or per-parameter positive scales.
        nan_policy : 'raise', 'omit' (drop points with NaN/inf) or None (SciPy's).
        checkpoint : a ``CheckpointSink`` (e.g. ``nlsq_tasks.io.CheckpointStore``) the streaming
            strategy saves to and resumes from.
        resume : with a checkpoint, True (default) resumes from its latest matching state;
            False starts afresh (and overwrites as it saves).
        progress : a callable receiving :class:`~nlsq_tasks.engine.progress.ProgressEvent`s
            (also a mapping ``{"phase", "pass", "chunk", "n_chunks", "cost", "nit"}``): every
            chunk when streaming, every iteration otherwise, framed by "start" and "done".

    Returns
    -------
    FitResult (iterating it yields ``popt, pcov``).
    """
    options = FitOptions.gather(locals(), unknown, "fit")  # a misspelt keyword: FitTypeError naming the valid ones
    return _fit_arrays(
        f, xdata, ydata, p0, sigma, absolute_sigma, check_finite, bounds, method, workflow, goal,
        memory_limit_gb, options, where="fit",
    )


def _fit_arrays(
    f, xdata, ydata, p0, sigma, absolute_sigma, check_finite, bounds, method, workflow, goal, memory_limit_gb,
    options: FitOptions | dict, *, where: str, model_bounds: bool = True, jac=None,
) -> FitResult:
    """fit() on arrays; ``options`` is a FitOptions, or a dict of its keywords (curve_fit's)."""
    t0 = time.perf_counter()
    options = FitOptions.coerce(options, where)
    reduction = split_fixed(f, p0, bounds, options.fixed, model_bounds=model_bounds, unbounded=UNBOUNDED)
    options = options.replace(fixed=None)
    if reduction is not None:  # fit the free parameters, then report every one (see _fixed)
        return reduction.expand(_fit_arrays(
            reduction.model, xdata, ydata, reduction.p0, sigma, absolute_sigma, check_finite, reduction.bounds, method,
            workflow, goal, memory_limit_gb, options, where=where, model_bounds=False, jac=reduction.reduce_jac(jac),
        ))
    data = V.check_data(xdata, ydata, sigma, check_finite=bool(check_finite), nan_policy=options.nan_policy)
    def replan():
        return make_plan(
            f,
            probe=data.x,  # the model is checked once on the whole x
            guess_xy=_guess_sample(data),
            n_points=data.n_points,
            n_features=data.n_features,
            p0=p0,
            bounds=bounds,
            method=method,
            workflow=workflow,
            goal=goal,
            memory_limit_gb=memory_limit_gb,
            options=options,
            absolute_sigma=absolute_sigma,
            covariance=data.sigma is not None and data.sigma.ndim == 2,
            model_bounds=model_bounds,
            jac=jac,
        )

    # A repeated call (same model, shapes and options) reuses its plan: see _repeat.
    key = _repeat.plan_key(f, data, p0, bounds, UNBOUNDED, method, workflow, goal, memory_limit_gb, absolute_sigma,
                           options.keywords(), model_bounds, jac)
    plan = _repeat.reuse(key, data, p0)
    reused = plan is not None
    if not reused:
        plan = replan()
        _repeat.remember(key, plan)
    if data.omitted:
        plan.notes.append(f"nan_policy='omit' dropped {data.omitted} point(s) with NaN or inf.")
    t_prep = time.perf_counter() - t0
    result = _run_arrays(plan, engine_data(plan.model, data))
    if reused and _repeat.failed_at_start(result):
        replan()  # the planner's clear error about the start (the model is not finite there)
    result.xdata, result.ydata = data.x, data.y
    return _finish(result, plan, t0, t_prep)


def fit_source(
    f,
    source: ChunkSource,
    p0=None,
    bounds=UNBOUNDED,
    workflow: str = "auto",
    goal=None,
    memory_limit_gb: float | None = None,
    absolute_sigma: bool = False,
    method: str | None = None,
    executor=None,
    *,
    plan=None,
    strategy: str | None = None,
    chunk_size: int | None = None,
    loss: str | None = None,
    f_scale: float | None = None,
    x_scale="jac",
    max_nfev: int | None = None,
    ftol: float | None = None,
    xtol: float | None = None,
    gtol: float | None = None,
    n_starts: int | None = None,
    seed: int | None = None,
    validate: bool | None = None,
    devices: int | None = None,
    fixed=None,
    nan_policy: str | None = None,
    checkpoint=None,
    resume: bool = True,
    progress=None,
    **unknown,
) -> FitResult:
    """Fit ``f`` to data served by a :class:`~nlsq_tasks.engine.sources.ChunkSource`.

    The data stay out of core: they are validated on a sample, the strategy is chosen
    from the source's size (or taken from ``plan``), and when the planned strategy works
    in memory (standard or chunked) the source is read once into arrays; otherwise the
    streaming solver runs one pass over the source per iteration. Every other argument is
    :func:`fit`'s. ``nan_policy='omit'`` is the only way to fit a source holding NaN (those
    points are dropped and the rest re-chunked, see :class:`FiniteSource`). The source's
    own chunk size is used for the passes; ``chunk_size`` sizes in-memory chunking.

    ``executor``: where the passes run. None or ``"local"``: this process. A
    ``distributed.Client``, a scheduler address (``"tcp://host:8786"``) or
    ``"local-cluster:N"`` (a temporary LocalCluster of N worker processes): a Dask cluster
    whose workers read their own chunks of a storage-backed source
    (:func:`nlsq_tasks.io.open_source`), keep them resident when the cluster's memory
    holds them, and return partial sums that are folded here in chunk order, so the
    result is the local streaming result bit for bit. The plan records
    ``executor="dask"`` (passes over the data the workers hold); ``result.execution``
    records the executor, the worker count, residency and why, and the time per pass.
    """
    from .strategies import get_strategy

    t0 = time.perf_counter()
    options = FitOptions.gather(locals(), unknown, "fit_source")
    reduction = split_fixed(f, p0, bounds, fixed, model_bounds=True, unbounded=UNBOUNDED)
    if reduction is not None:  # fit the free parameters, then report every one (see _fixed)
        return reduction.expand(fit_source(
            reduction.model, source, reduction.p0, reduction.bounds, workflow, goal, memory_limit_gb, absolute_sigma,
            method, executor, **options.replace(fixed=None).keywords(),
        ))
    missing = [a for a in ("n_points", "n_features", "chunk_size", "chunks", "sample", "fingerprint")
               if not hasattr(source, a)]
    if missing:
        raise V.FitTypeError(
            "source", source, f"source must be a ChunkSource; {type(source).__name__} lacks {', '.join(missing)}."
        )
    if int(source.n_points) <= 0:
        raise V.FitInputError("source", int(source.n_points), "the source holds no data points.")
    dask_executor = None
    if executor is not None and not (isinstance(executor, str) and executor.strip().lower() == "local"):
        from .dask.front import check_executor

        planned_starts = plan.get("n_starts") if isinstance(plan, dict) else getattr(plan, "n_starts", None)
        dask_executor = check_executor(executor, source, int(n_starts or planned_starts or 1), nan_policy)
    # A sample stands in for the data wherever validation or the model's guess needs values.
    sample = source.sample(min(int(source.n_points), 4096), seed=0)
    sample_data = V.check_data(sample.x, sample.y, sample.sigma, check_finite=True, nan_policy=nan_policy)
    prepared = make_plan(
        f,
        probe=_probe(sample_data.x),
        guess_xy=(sample_data.x, sample_data.y),
        n_points=int(source.n_points),
        n_features=int(source.n_features),
        p0=p0,
        bounds=bounds,
        method=method,
        workflow=workflow,
        goal=goal,
        memory_limit_gb=memory_limit_gb,
        options=options,
        absolute_sigma=absolute_sigma,
        covariance=False,
        executor="local" if dask_executor is None else "dask",
    )
    t_prep = time.perf_counter() - t0
    if dask_executor is not None:
        result = _run_on_dask(prepared, source, dask_executor)
    elif not get_strategy(prepared.strategy).in_memory:
        result = _run_streaming(prepared, source, nan_policy=nan_policy)
    else:
        # The plan says the data fit in memory: one read, then the in-memory solvers.
        data = _read_all(source, nan_policy)
        V.check_enough_points(data.n_points, prepared.names)
        if data.omitted:
            prepared.notes.append(f"nan_policy='omit' dropped {data.omitted} point(s) with NaN or inf.")
        result = _run_arrays(prepared, engine_data(prepared.model, data))
    result.data_uri = getattr(source, "uri", None)
    return _finish(result, prepared, t0, t_prep)


GUESS_POINTS = 1_000_000  # a model's guess() sees at most this many points (evenly strided, in order)


def _guess_sample(data: V.Data) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, -(-data.n_points // GUESS_POINTS))
    return data.take(slice(None, None, step))


def _probe(x: np.ndarray) -> np.ndarray:
    m = min(V.PROBE_POINTS, x.shape[-1])
    return x[:m] if x.ndim == 1 else x[:, :m]


def _read_all(source: ChunkSource, nan_policy) -> V.Data:
    xs, ys, ss = [], [], []
    max_chunks = -(-int(source.n_points) // int(source.chunk_size)) + 1
    for i, chunk in enumerate(source.chunks()):
        if i >= max_chunks:  # a source that yields more than it announced
            raise V.FitInputError("source", source.n_points, "the source yielded more chunks than n_points allows.")
        xs.append(np.asarray(chunk.x))
        ys.append(np.asarray(chunk.y))
        ss.append(None if chunk.sigma is None else np.asarray(chunk.sigma))
    x = np.concatenate(xs, axis=-1)
    sigma = None if any(s is None for s in ss) else np.concatenate(ss)
    return V.check_data(x, np.concatenate(ys), sigma, check_finite=True, nan_policy=nan_policy)


# -- running ----------------------------------------------------------------------------
def _whiten(fn, x, y, cov):
    """The covariance-weighted problem as a unit-weight one over point indices.

    With ``cov = L L^T``, residuals :math:`L^{-1}(y - f)` are those of fitting
    ``fn_w(i) = (L^{-1} f(x))[i]`` to ``y_w = L^{-1} y`` at ``x_w = i = 0..n-1``. The whitened
    model value of a point depends on every point, so ``fn_w`` evaluates the whole
    whitened vector and picks its points by index: whatever subset, order or padding the
    caller evaluates it on (multi-start batches, the validation pass's sorted chunks)
    gets the right values. Returns ``(fn_w, x_w, y_w)``.
    """
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    Lj = jnp.asarray(np.linalg.cholesky(cov))
    xj = jnp.asarray(x)
    y_w = np.asarray(solve_triangular(Lj, jnp.asarray(y), lower=True))

    def fn_w(index, *p):
        whitened = solve_triangular(Lj, fn(xj, *p), lower=True)
        return whitened[jnp.asarray(index).astype(jnp.int32)]

    return fn_w, np.arange(y_w.shape[0], dtype=np.float64), y_w


def _problem(plan: Plan, fn, x, y, sigma, source):
    return Problem(fn, x, y, sigma, source, plan.p0, plan.lower, plan.upper, plan.options, plan.names,
                   plan.chunk_size, config=plan.config, checkpoint=plan.checkpoint, progress=plan.progress,
                   fingerprint=_fingerprint(plan))


def _run_arrays(plan: Plan, data: V.Data) -> FitResult:
    """Run the planned strategy on in-memory data (multi-start and validation included)."""
    fn, x, y, sigma = model_fn(plan.model), data.x, data.y, data.sigma
    covariance = sigma is not None and sigma.ndim == 2
    source = None
    if not get_strategy(plan.strategy).in_memory:
        source = ArrayChunkSource(x, y, sigma, chunk_size=plan.chunk_size)
    if covariance and (plan.n_starts > 1 or plan.validate):
        # run_standard whitens a covariance itself; multi-start screening and the
        # validation pass take per-point sigma only, so they get the whitened problem.
        fn_w, x_w, y_w = _whiten(fn, x, y, sigma)
    if covariance and plan.n_starts > 1:
        result = _solve(plan, _problem(plan, fn_w, x_w, y_w, None, source))
        _restore_unweighted_stats(result, fn, x, y)
    else:
        result = _solve(plan, _problem(plan, fn, x, y, sigma, source))
    if plan.validate:
        if covariance:
            _validation(plan, _problem(plan, fn_w, x_w, y_w, None, source), result)
        else:
            _validation(plan, _problem(plan, fn, x, y, sigma, source), result)
    return result


def _run_streaming(plan: Plan, source: ChunkSource, nan_policy=None) -> FitResult:
    fn = model_fn(plan.model)
    if nan_policy == "omit":
        source = FiniteSource(source)
        if source.omitted:
            plan.notes.append(f"nan_policy='omit' dropped {source.omitted} point(s) with NaN or inf.")
        V.check_enough_points(source.n_points, plan.names)
    if source.chunk_size != plan.chunk_size:
        logger.info("streaming with the source's own chunk size %d (the plan sized %d)", source.chunk_size, plan.chunk_size)
    problem = _problem(plan, fn, None, None, None, source)
    result = _solve(plan, problem)
    if plan.validate:
        _validation(plan, problem, result)
    return result


def _run_on_dask(plan: Plan, source: ChunkSource, executor) -> FitResult:
    """Streaming passes on a Dask cluster (the plan made them passes over the chunks the
    workers hold); the loop, the fold, the checkpoints and the validation stay here."""
    from .dask.front import run_on_dask
    from .engine.streaming import run_streaming

    fn = model_fn(plan.model)

    def passes(pass_executor):
        result = run_streaming(fn, source, plan.p0, plan.lower, plan.upper, plan.options, plan.names,
                               config=plan.config, checkpoint=plan.checkpoint, progress=plan.progress,
                               fingerprint=_fingerprint(plan), executor=pass_executor.bind)
        if plan.validate:  # on the cluster too: its residual pass and re-fits reuse the resident chunks
            _validation(plan, _problem(plan, fn, None, None, None, source), result, executor=pass_executor.bind)
        return result

    result, record = run_on_dask(executor, passes)
    result.execution = record
    return result


def _fingerprint(plan: Plan) -> str:
    fp = getattr(plan.model, "fingerprint", None)
    ident = fp() if callable(fp) else repr(plan.model)
    goal = None if plan.goal is None else plan.goal.upper()
    return f"{ident}|workflow={plan.workflow}|goal={goal}"


def _solve(plan: Plan, problem) -> FitResult:
    """Run the plan. A strategy that reports progress per chunk does so itself; the
    in-memory solvers report each iteration from inside their compiled loop, framed by a
    start and a done event."""
    spec = get_strategy(plan.strategy)
    if plan.progress is None or spec.reports_progress:
        return _solve_quiet(plan, spec, problem)
    n = int(np.shape(problem.y)[0])
    n_chunks = -(-n // plan.chunk_size) if spec.chunks else 1
    plan.progress(ProgressEvent("start", 0, 0, n_chunks, math.nan, 0))
    result = _solve_quiet(plan, spec, problem)
    plan.progress(ProgressEvent("done", result.nit, n_chunks - 1, n_chunks, result.cost, result.nit))
    return result


def _solve_quiet(plan: Plan, spec, problem) -> FitResult:
    if plan.n_starts > 1:
        from .engine.multistart import run_multistart

        return run_multistart(
            problem.fn, problem.x, problem.y, problem.sigma, *problem.start_args(), n_starts=plan.n_starts,
            seed=plan.seed, sampler=plan.sampler, strategy=plan.strategy, chunk_size=plan.chunk_size,
            source=problem.source, config=plan.config, checkpoint=plan.checkpoint, progress=plan.progress,
        )
    execution = plan.execution
    if execution is not None and execution.sharded:  # the plan spreads the points over several devices
        from .engine.sharded import fit_sharded_arrays

        return fit_sharded_arrays(problem.fn, problem.x, problem.y, problem.sigma, *problem.start_args(),
                                  strategy=plan.strategy, execution=execution, progress=plan.progress)
    return spec.solve(problem)


def _validation(plan: Plan, problem, result: FitResult, executor=None) -> None:
    """The QUALITY pass; re-fits run as the strategy says (memory stays bounded);
    ``executor`` (a host-executor factory) runs its passes on a Dask cluster."""
    from .engine.validation import validate_fit
    from .strategies import get_strategy

    t = time.perf_counter()
    refit = get_strategy(plan.strategy).validation_refit(problem)
    validate_fit(problem.fn, problem.x, problem.y, problem.sigma, result, plan.options, source=problem.source,
                 seed=plan.seed, refit=refit, executor=executor)
    result.timings["validation"] = time.perf_counter() - t


def _restore_unweighted_stats(result: FitResult, fn, x, y) -> None:
    import jax.numpy as jnp

    f = np.asarray(fn(jnp.asarray(x), *[jnp.asarray(v) for v in result.popt]))
    result.stats.ssr = float(np.sum((y - f) ** 2))
    result.stats.sst = float(np.sum((y - y.mean()) ** 2))


def _finish(result: FitResult, plan: Plan, t0: float, t_prep: float) -> FitResult:
    """The result with its provenance: the plan that ran it, recorded once."""
    timings = {**result.timings, "prepare": t_prep, "total": time.perf_counter() - t0}
    result = result.with_provenance(plan.fit_plan, timings=timings, notes=plan.notes)
    from .engine.finalize import emit_warnings

    emit_warnings(result)  # undetermined parameters by name; a fit stopped at max_nfev
    return result


class FiniteSource:
    """The finite points of a chunk source, re-chunked to its chunk size
    (``nan_policy='omit'`` out of core).

    A point is dropped when x (any feature), y or sigma is NaN or inf. Construction reads
    the source once to count the kept points, so that ``n_points`` is exact (the
    streaming solver checks every pass against it); chunks are then refilled to exactly
    ``chunk_size`` points, in the source's order, so passes stay reproducible.
    ``chunks(start)`` skips ``start`` output chunks by reading past them.
    """

    def __init__(self, source: ChunkSource):
        self.source = source
        self.chunk_size = int(source.chunk_size)
        self.n_features = int(source.n_features)
        self.has_sigma = bool(source.has_sigma)
        self._max_chunks = -(-int(source.n_points) // self.chunk_size)
        kept = sum(int(self._keep(c).sum()) for c in self._source_chunks())
        self.n_points = kept
        self.omitted = int(source.n_points) - kept

    @staticmethod
    def _keep(chunk) -> np.ndarray:
        x = np.asarray(chunk.x)
        ok = np.isfinite(np.asarray(chunk.y))
        ok &= np.isfinite(x) if x.ndim == 1 else np.all(np.isfinite(x), axis=0)
        if chunk.sigma is not None:
            ok &= np.isfinite(np.asarray(chunk.sigma))
        return ok

    @staticmethod
    def _filter(chunk, keep):
        from .engine.sources import Chunk

        x = np.asarray(chunk.x)
        return Chunk(x[..., keep], np.asarray(chunk.y)[keep], None if chunk.sigma is None else np.asarray(chunk.sigma)[keep])

    def _source_chunks(self):
        for j, chunk in enumerate(self.source.chunks()):
            if j >= self._max_chunks:  # bounded: a source may not yield more than it announced
                raise V.FitInputError("source", self.source.n_points, "the source yielded more chunks than its n_points allows.")
            yield chunk

    def fingerprint(self) -> str:
        return "finite:" + self.source.fingerprint()

    def chunks(self, start: int = 0):
        m = self.chunk_size
        parts: list = []
        held = emitted = 0
        for chunk in self._source_chunks():
            keep = self._keep(chunk)
            if keep.any():
                parts.append(self._filter(chunk, keep))
                held += int(keep.sum())
            if held >= m:
                x, y, s = self._join(parts)
                full = held // m
                for k in range(full):
                    if emitted >= start:
                        yield self._slice(x, y, s, k * m, (k + 1) * m)
                    emitted += 1
                parts = [self._slice(x, y, s, full * m, held)] if held > full * m else []
                held -= full * m
        if held and emitted >= start:
            yield self._slice(*self._join(parts), 0, held)

    def _join(self, parts):
        x = np.concatenate([np.asarray(c.x) for c in parts], axis=-1)
        y = np.concatenate([c.y for c in parts])
        s = np.concatenate([c.sigma for c in parts]) if self.has_sigma else None
        return x, y, s

    @staticmethod
    def _slice(x, y, s, lo, hi):
        from .engine.sources import Chunk

        return Chunk(x[..., lo:hi], y[lo:hi], None if s is None else s[lo:hi])

    def sample(self, n: int, seed: int = 0):
        chunk = self.source.sample(n, seed)
        return self._filter(chunk, self._keep(chunk))


# curve_fit lives in its own module (SciPy compatibility); re-exported here unchanged.
from ._curve_fit import CurveFitResult, curve_fit  # noqa: E402


def __getattr__(name):
    if name == "OptimizeWarning":  # made on first use: it subclasses SciPy's when installed (see _warnings)
        from ._warnings import optimize_warning

        return optimize_warning()
    raise AttributeError(name)
