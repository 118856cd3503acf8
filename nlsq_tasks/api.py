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

Weighted least squares with a covariance ``sigma`` (shape ``(n, n)``, ``C = L L^T``)
is reduced to the 1-D case by whitening: minimising
:math:`\\lVert L^{-1}(y - f(x; p))\\rVert^2` is fitting ``L^{-1} f`` to ``L^{-1} y``
with unit weights. Whitening couples every point with every other, so a covariance can
only be fitted with the standard (all in memory) strategy.

``method``: ``None``/``"auto"`` leaves the routing to the workflow; ``"trf"`` and ``"lm"``
ask for the standard in-memory trust-region solver (SciPy's behaviour for those names),
and ``"lm"`` additionally requires infinite bounds, as in SciPy.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _validate as V
from .engine.options import LOSSES, SolverOptions
from .engine.result import FitResult
from .engine.sources import ArrayChunkSource, ChunkSource

logger = logging.getLogger("nlsq_tasks")

inf = math.inf
# The default of ``bounds``: identity tells "not given" (a built-in model's own bounds
# apply) from an explicit ``(-inf, inf)`` (truly unbounded).
_UNBOUNDED = (-inf, inf)

METHODS = (None, "auto", "trf", "lm")
# SciPy's finite-difference names for jac: we differentiate exactly with forward-mode AD
# instead, which is what these names ask for, only better.
FD_JAC_NAMES = ("2-point", "3-point", "cs")

FIT_KWARGS = (
    "loss",
    "f_scale",
    "x_scale",
    "max_nfev",
    "ftol",
    "xtol",
    "gtol",
    "n_starts",
    "seed",
    "chunk_size",
    "nan_policy",
    "checkpoint",
    "progress",
    "strategy",
    "validate",
)


class OptimizeWarning(UserWarning):
    """Raised as a warning when the covariance of the parameters cannot be estimated (SciPy's name)."""


# -- the plan: every decision taken before the solver starts ----------------------------
@dataclass
class _Plan:
    model: Any
    names: list[str]
    p0: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    options: SolverOptions
    strategy: str
    reason: str
    budget: dict[str, Any]
    config: Any  # ChunkedConfig | StreamingConfig | None
    workflow: str | None
    goal: Any  # OptimizationGoal | None
    n_starts: int
    seed: int
    sampler: str
    validate: bool
    checkpoint: Any
    progress: Callable | None
    notes: list[str] = field(default_factory=list)

    @property
    def tolerances(self) -> dict[str, float]:
        o = self.options
        return {"ftol": o.ftol, "xtol": o.xtol, "gtol": o.gtol}


def fit(
    f,
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma: bool = False,
    check_finite: bool = True,
    bounds=_UNBOUNDED,
    method: str | None = None,
    workflow: str = "auto",
    goal=None,
    memory_limit_gb: float | None = None,
    **kwargs,
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
    **kwargs : loss, f_scale, x_scale, max_nfev, ftol, xtol, gtol (explicit values override
        the preset and adaptive ones), n_starts, seed, chunk_size, nan_policy ('raise', 'omit'
        or None), checkpoint (a CheckpointSink), progress (callable), strategy (force
        'standard', 'chunked' or 'streaming'), validate (bool: run the QUALITY checks).

    Returns
    -------
    FitResult (iterating it yields ``popt, pcov``).
    """
    return _fit_arrays(
        f, xdata, ydata, p0, sigma, absolute_sigma, check_finite, bounds, method, workflow, goal,
        memory_limit_gb, kwargs, where="fit",
    )


def _fit_arrays(
    f, xdata, ydata, p0, sigma, absolute_sigma, check_finite, bounds, method, workflow, goal, memory_limit_gb,
    kwargs, *, where: str, model_bounds: bool = True, jac=None,
) -> FitResult:
    t0 = time.perf_counter()
    V.check_kwargs(kwargs, FIT_KWARGS, where)
    data = V.check_data(
        xdata, ydata, sigma, check_finite=bool(check_finite), nan_policy=kwargs.pop("nan_policy", None)
    )
    plan = _plan(
        f,
        probe=_probe(data.x),
        guess_xy=(data.x, data.y),
        n_points=data.n_points,
        n_features=data.n_features,
        p0=p0,
        bounds=bounds,
        method=method,
        workflow=workflow,
        goal=goal,
        memory_limit_gb=memory_limit_gb,
        kwargs=kwargs,
        absolute_sigma=absolute_sigma,
        covariance=data.sigma is not None and data.sigma.ndim == 2,
        model_bounds=model_bounds,
        jac=jac,
    )
    if data.omitted:
        plan.notes.append(f"nan_policy='omit' dropped {data.omitted} point(s) with NaN or inf.")
    t_prep = time.perf_counter() - t0
    result = _run_arrays(plan, data)
    return _finish(result, plan, t0, t_prep)


def fit_source(
    f,
    source: ChunkSource,
    p0=None,
    bounds=_UNBOUNDED,
    workflow: str = "auto",
    goal=None,
    memory_limit_gb: float | None = None,
    absolute_sigma: bool = False,
    method: str | None = None,
    **kwargs,
) -> FitResult:
    """Fit ``f`` to data served by a :class:`~nlsq_tasks.engine.sources.ChunkSource`.

    The data stay out of core: they are validated on a sample, the strategy is chosen
    from the source's size, and when the data themselves fit in memory (standard or
    chunked) they are read once into arrays; otherwise the streaming solver runs one pass
    over the source per iteration. Arguments as :func:`fit`; ``nan_policy='omit'`` is the
    only way to fit a source holding NaN (points are then masked chunk by chunk).
    """
    t0 = time.perf_counter()
    V.check_kwargs(kwargs, FIT_KWARGS, "fit_source")
    missing = [a for a in ("n_points", "n_features", "chunk_size", "chunks", "sample", "fingerprint")
               if not hasattr(source, a)]
    if missing:
        raise V.FitTypeError(
            "source", source, f"source must be a ChunkSource; {type(source).__name__} lacks {', '.join(missing)}."
        )
    if int(source.n_points) <= 0:
        raise V.FitInputError("source", int(source.n_points), "the source holds no data points.")
    nan_policy = kwargs.pop("nan_policy", None)
    # A sample stands in for the data wherever validation or the model's guess needs values.
    sample = source.sample(min(int(source.n_points), 4096), seed=0)
    sample_data = V.check_data(sample.x, sample.y, sample.sigma, check_finite=True, nan_policy=nan_policy)
    plan = _plan(
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
        kwargs=kwargs,
        absolute_sigma=absolute_sigma,
        covariance=False,
    )
    t_prep = time.perf_counter() - t0
    if plan.strategy == "streaming":
        result = _run_streaming(plan, source, nan_policy=nan_policy)
    else:
        # The selector says the data fit in memory: one read, then the in-memory solvers.
        data = _read_all(source, nan_policy)
        result = _run_arrays(plan, data)
    return _finish(result, plan, t0, t_prep)


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


# -- resolution of f, goal, workflow and method -----------------------------------------
def _resolve_model(f, p0=None):
    """A Model from ``f``; a variadic ``f(x, *p)`` takes its parameter count from ``p0``."""
    from .models import resolve_model

    try:
        return resolve_model(f)
    except (ValueError, TypeError, KeyError, SyntaxError) as exc:
        variadic = callable(f) and not isinstance(f, str) and "*args" in str(exc)
        if variadic and p0 is not None:
            return resolve_model(f, params=int(np.size(p0)))
        if variadic:
            raise V.FitInputError(
                "p0",
                None,
                "cannot determine the number of parameters: f takes *args and no p0 was given. "
                "Pass p0 (one value per parameter) or give f named parameters, f(x, a, b, ...).",
            ) from exc
        raise V.FitInputError("f", f, f"f={V.short(f)} is not a usable model: {exc}") from exc


def _resolve_goal(goal):
    from .workflow import OptimizationGoal

    try:
        g = OptimizationGoal.coerce(goal)
    except (TypeError, ValueError) as exc:
        valid = ", ".join(m.name.lower() for m in OptimizationGoal)
        raise V.FitInputError("goal", goal, f"goal={goal!r} is not valid; allowed: {valid} (or None).") from exc
    return None if g is None else OptimizationGoal.normalize(g)


def _resolve_workflow(workflow):
    """None for "auto", else the loaded Preset (by name or YAML path)."""
    if workflow is None or (isinstance(workflow, str) and workflow.strip().lower() == "auto"):
        return None
    from .workflow import list_presets, load_preset

    if not isinstance(workflow, str) and not hasattr(workflow, "__fspath__"):
        if type(workflow).__name__ == "Preset":
            return workflow
        raise V.FitTypeError("workflow", workflow, f"workflow must be 'auto', a preset name or a YAML path; got {V.short(workflow)}.")
    try:
        return load_preset(workflow)
    except (ValueError, KeyError, FileNotFoundError, TypeError) as exc:
        raise V.FitInputError(
            "workflow",
            workflow,
            f"workflow={workflow!r} is not valid ({exc}); allowed: 'auto', {', '.join(map(repr, list_presets()))}, "
            "or the path of a preset YAML file.",
        ) from exc


def _method_strategy(method, lower, upper) -> str | None:
    """The strategy a SciPy method name asks for (None: leave it to the workflow)."""
    method = V.one_of("method", method, METHODS, normalize=lambda m: m.lower() if isinstance(m, str) else m)
    if method == "lm" and (np.any(np.isfinite(lower)) or np.any(np.isfinite(upper))):
        raise V.FitInputError(
            "method",
            "lm",
            "method='lm' only works for unconstrained problems (SciPy's rule); use method='trf' or 'auto' with bounds.",
        )
    return "standard" if method in ("trf", "lm") else None


# -- planning ---------------------------------------------------------------------------
def _plan(
    f,
    *,
    probe: np.ndarray,
    guess_xy: tuple[np.ndarray, np.ndarray],
    n_points: int,
    n_features: int,
    p0,
    bounds,
    method,
    workflow,
    goal,
    memory_limit_gb,
    kwargs: dict[str, Any],
    absolute_sigma: bool,
    covariance: bool,
    model_bounds: bool = True,
    jac=None,
) -> _Plan:
    """Validate the non-data arguments and take every decision; nothing is traced but the probe."""
    model = _resolve_model(f, p0)
    names = list(model.param_names)
    goal = _resolve_goal(goal)
    preset = _resolve_workflow(workflow)
    if goal is None and preset is not None and getattr(preset, "goal", None) is not None:
        goal = _resolve_goal(preset.goal)

    # Bounds: explicit, else (for fit) the model's own, e.g. a positive width.
    from_model = False
    if bounds is _UNBOUNDED and model_bounds and method != "lm" and callable(getattr(model, "default_bounds", None)):
        lo, hi = model.default_bounds()
        lower, upper = V.check_bounds((lo, hi), names)
        from_model = bool(np.any(np.isfinite(lower)) or np.any(np.isfinite(upper)))
    else:
        lower, upper = V.check_bounds(bounds, names)
    forced = _method_strategy(method, lower, upper)

    # p0: explicit (must be inside the bounds), else the model's guess, else a feasible default.
    if p0 is not None:
        try:
            # the solvers need a strictly feasible start: a p0 on a bound moves 1e-10 inside
            p_start = V.into_bounds(V.check_p0(p0, names, lower, upper), lower, upper)
        except V.FitInputError as exc:
            if from_model and exc.field == "p0" and "outside the bounds" in str(exc):
                raise V.FitInputError(
                    "p0", exc.value, f"{exc} These are the model's default bounds; pass bounds= to change them."
                ) from exc
            raise
    else:
        p_start = _guess(model, guess_xy, names, lower, upper)
    V.check_enough_points(n_points, names)

    options = _solver_options(kwargs, preset, goal, n_points, names, absolute_sigma)
    strategy, reason, budget, config = _route(
        kwargs, preset, forced, covariance, goal, n_points, len(names), n_features, memory_limit_gb
    )
    n_starts, seed, sampler = _starts(kwargs, preset, goal)
    validate = kwargs.get("validate")
    if validate is not None and not isinstance(validate, (bool, np.bool_)):
        raise V.FitTypeError("validate", validate, f"validate must be True or False; got {V.short(validate)}.")
    from .workflow import OptimizationGoal

    if validate is None:
        validate = bool(getattr(preset, "validate", False)) or goal is OptimizationGoal.QUALITY
    checkpoint = V.check_checkpoint(kwargs.get("checkpoint"))
    progress = V.check_callable_or_none("progress", kwargs.get("progress"))
    # Last, once every cheap check has passed: the model itself, on a few points.
    V.check_model_at_p0(_model_fn(model), probe, p_start, names)
    if jac is not None:
        V.check_jac_at_p0(_model_fn(model), jac, probe, p_start, names)
    return _Plan(
        model=model,
        names=names,
        p0=p_start,
        lower=lower,
        upper=upper,
        options=options,
        strategy=strategy,
        reason=reason,
        budget=budget,
        config=config,
        workflow="auto" if preset is None else getattr(preset, "name", str(workflow)),
        goal=goal,
        n_starts=n_starts,
        seed=seed,
        sampler=sampler,
        validate=bool(validate),
        checkpoint=checkpoint,
        progress=progress,
    )


def _guess(model, xy, names, lower, upper) -> np.ndarray:
    guess = getattr(model, "guess", None)
    p = None
    if callable(guess):
        try:
            p = guess(*xy)
        except Exception as exc:  # a heuristic failing is not the user's error: fall back
            logger.warning("model %s: guess() failed (%s: %s); starting from a default p0",
                           getattr(model, "name", "?"), type(exc).__name__, exc)
            p = None
    if p is not None:
        p = np.asarray(p, dtype=np.float64).ravel()
        if p.shape == (len(names),) and np.all(np.isfinite(p)):
            return V.into_bounds(p, lower, upper)
        logger.warning("model %s: guess() returned %s; starting from a default p0", getattr(model, "name", "?"), V.short(p))
    return V.feasible_start(lower, upper)


def _solver_options(kwargs, preset, goal, n_points, names, absolute_sigma) -> SolverOptions:
    from .workflow import calculate_adaptive_tolerances

    tols = dict(calculate_adaptive_tolerances(n_points, goal))
    preset_tol = _preset_tolerances(preset)
    tols.update(preset_tol)
    tols.update({k: kwargs[k] for k in ("ftol", "xtol", "gtol") if kwargs.get(k) is not None})
    tols = V.check_tolerances(tols)
    loss = V.check_loss(kwargs.get("loss") or getattr(preset, "loss", None) or "linear")
    return SolverOptions(
        ftol=tols["ftol"],
        xtol=tols["xtol"],
        gtol=tols["gtol"],
        max_nfev=V.check_positive_int("max_nfev", kwargs["max_nfev"] if kwargs.get("max_nfev") is not None else getattr(preset, "max_nfev", None)),
        loss=loss,
        f_scale=V.check_f_scale(kwargs["f_scale"] if kwargs.get("f_scale") is not None else getattr(preset, "f_scale", 1.0)),
        x_scale=V.check_x_scale(kwargs.get("x_scale", "jac"), names),
        absolute_sigma=bool(absolute_sigma),
    )


def _preset_tolerances(preset) -> dict[str, float]:
    if preset is None:
        return {}
    out = {}
    if preset.tolerance is not None:
        out = {"ftol": float(preset.tolerance), "xtol": float(preset.tolerance), "gtol": float(preset.tolerance)}
    return out


# -- routing ----------------------------------------------------------------------------
DEFAULT_CHUNK_SIZE = 65_536  # when the strategy is forced and the selector sized no chunk
GOAL_STARTS = {"ROBUST": 10, "QUALITY": 20}  # multi-start counts when only the goal asks for it


def _route(kwargs, preset, forced_by_method, covariance, goal, n_points, n_params, n_features, memory_limit_gb):
    """(strategy, reason, budget dict, config) -- see the module docstring for the precedence."""
    from .workflow import ChunkedConfig, MemoryBudgetSelector, StreamingConfig
    from .workflow.configs import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

    requested = kwargs.get("strategy")
    if requested is not None:
        requested = V.one_of("strategy", requested, V.STRATEGIES, normalize=lambda s: str(s).lower())
    if memory_limit_gb is not None:
        try:
            ok = float(memory_limit_gb) > 0 and math.isfinite(float(memory_limit_gb))
        except (TypeError, ValueError):
            ok = False
        if not ok or isinstance(memory_limit_gb, bool):
            raise V.FitInputError(
                "memory_limit_gb", memory_limit_gb, f"memory_limit_gb={memory_limit_gb!r} is not valid; allowed: a number > 0 (GB) or None."
            )
    selector = MemoryBudgetSelector()
    selector.select(n_points, n_params, n_features, memory_limit_gb=memory_limit_gb, goal=goal)
    decision = selector.last_decision
    auto = decision.strategy.value

    preset_strategy = _preset_strategy(preset)
    if requested is not None and forced_by_method is not None and requested != forced_by_method:
        raise V.FitInputError(
            "strategy", requested,
            f"strategy={requested!r} conflicts with the method, which asks for the standard in-memory solver; "
            "use method=None (or 'auto') with strategy=.",
        )
    if requested is not None:
        strategy, reason = requested, f"strategy={requested!r} requested (the memory budget alone gives {auto}: {decision.reason})"
    elif forced_by_method is not None:
        strategy, reason = forced_by_method, f"method asks for the standard in-memory solver (the memory budget alone gives {auto})"
    elif preset_strategy is not None:
        strategy, reason = preset_strategy, f"preset {getattr(preset, 'name', '?')!r} uses the {preset_strategy} strategy"
    else:
        strategy, reason = auto, decision.reason
    if covariance and strategy != "standard":
        if requested is not None:
            raise V.FitInputError(
                "sigma", "(n, n)",
                f"a covariance matrix sigma (n, n) couples all points and needs strategy='standard'; got strategy={requested!r}. "
                "Pass per-point standard deviations sigma (n,) to chunk or stream.",
            )
        reason += "; but sigma is a covariance matrix (n, n), which only the standard strategy can use: standard"
        strategy = "standard"
    if strategy != auto and strategy == "standard" and not decision.budget.fits_in_memory:
        logger.warning("strategy standard chosen although the memory budget says %s: %s", auto, decision.reason)

    # chunk size: explicit > preset > the selector's sizing > default
    chunk = kwargs.get("chunk_size")
    if chunk is not None:
        chunk = V.check_positive_int("chunk_size", chunk, minimum=MIN_CHUNK_SIZE)
        if chunk > MAX_CHUNK_SIZE:
            raise V.FitInputError("chunk_size", chunk, f"chunk_size={chunk} is not valid; allowed: {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}.")
    else:
        chunk = getattr(preset, "chunk_size", None) or getattr(decision.config, "chunk_size", None) or DEFAULT_CHUNK_SIZE
    config = None
    if strategy == "chunked":
        config = ChunkedConfig(chunk_size=int(chunk), n_chunks=max(1, -(-n_points // int(chunk))))
    elif strategy == "streaming":
        base = decision.config if isinstance(decision.config, StreamingConfig) else None
        fields = {} if base is None else dict(base.__dict__)
        fields.update(_preset_streaming(preset))
        fields["chunk_size"] = int(chunk)
        config = StreamingConfig(**fields)
    if config is not None and f"{config.chunk_size:,}" not in reason:
        reason += f"; chunks of {config.chunk_size:,} points"
    return strategy, reason, decision.budget.to_dict(), config


def _preset_strategy(preset) -> str | None:
    s = getattr(preset, "strategy", None) if preset is not None else None
    if s is None:
        return None
    s = getattr(s, "value", s)
    return None if s == "auto" else str(s)


def _preset_streaming(preset) -> dict[str, Any]:
    if preset is None:
        return {}
    ck = preset.checkpoint
    return {"enable_checkpoints": bool(ck.enabled), "checkpoint_every_chunks": int(ck.every_chunks)}


def _starts(kwargs, preset, goal) -> tuple[int, int, str]:
    """(n_starts, seed, sampler): explicit keyword > preset > what the goal implies > one start."""
    n = kwargs.get("n_starts")
    if n is None and preset is not None and ("n_starts" in preset.model_fields_set or preset.n_starts > 1):
        n = preset.n_starts
    if n is None:
        n = GOAL_STARTS.get(goal.name, 1) if goal is not None else 1
    n = V.check_positive_int("n_starts", n, minimum=1, allow_none=False)
    seed = kwargs.get("seed")
    if seed is None:
        seed = getattr(preset, "seed", None) or 0
    seed = V.check_positive_int("seed", seed, minimum=0, allow_none=False)
    sampler = getattr(preset, "multistart_sampler", None) or "sobol"
    return n, seed, sampler


# -- running ----------------------------------------------------------------------------
def _whiten(fn, x, y, cov):
    """(fn_w, y_w) with ``L^{-1}`` applied, ``cov = L L^T``: unit-weight residuals equal the
    covariance-weighted ones, :math:`r_w = L^{-1}(y - f)`."""
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    L = np.linalg.cholesky(cov)
    Lj = jnp.asarray(L)
    y_w = np.asarray(solve_triangular(Lj, jnp.asarray(y), lower=True))

    def fn_w(xx, *p):
        return solve_triangular(Lj, fn(xx, *p), lower=True)

    return fn_w, y_w


def _run_arrays(plan: _Plan, data: V.Data) -> FitResult:
    """Run the planned strategy on in-memory data (multi-start and validation included)."""
    fn, x, y, sigma = _model_fn(plan.model), data.x, data.y, data.sigma
    covariance = sigma is not None and sigma.ndim == 2
    source = None
    if plan.strategy == "streaming":
        source = ArrayChunkSource(x, y, sigma, chunk_size=plan.config.chunk_size)
    if covariance and (plan.n_starts > 1 or plan.validate):
        # run_standard whitens a covariance itself; multi-start screening and the
        # validation pass take per-point sigma only, so they get the whitened problem.
        fn_w, y_w = _whiten(fn, x, y, sigma)
    if covariance and plan.n_starts > 1:
        result = _solve(plan, fn_w, x, y_w, None, source)
        _restore_unweighted_stats(result, fn, x, y)
    else:
        result = _solve(plan, fn, x, y, sigma, source)
    if plan.validate:
        if covariance:
            _validation(plan, fn_w, x, y_w, None, source, result)
        else:
            _validation(plan, fn, x, y, sigma, source, result)
    return result


def _run_streaming(plan: _Plan, source: ChunkSource, nan_policy=None) -> FitResult:
    fn = _model_fn(plan.model)
    if source.chunk_size != plan.config.chunk_size:
        logger.info("streaming with the source's own chunk size %d (the plan sized %d)", source.chunk_size, plan.config.chunk_size)
    result = _solve(plan, fn, None, None, None, source)
    if plan.validate:
        _validation(plan, fn, None, None, None, source, result)
    return result


def _model_fn(model):
    return model.fn if hasattr(model, "fn") else model


def _fingerprint(plan: _Plan) -> str:
    fp = getattr(plan.model, "fingerprint", None)
    ident = fp() if callable(fp) else repr(plan.model)
    return f"{ident}|workflow={plan.workflow}|goal={None if plan.goal is None else plan.goal.name}"


def _solve(plan: _Plan, fn, x, y, sigma, source) -> FitResult:
    from .engine.strategies import run_chunked, run_standard

    args = (plan.p0, plan.lower, plan.upper, plan.options, plan.names)
    if plan.n_starts > 1 and not _multistart_ready():
        # TEMPORARY: engine.multistart needs engine.loop.solve_batch, which has not landed.
        logger.warning("multi-start is not available yet (engine.loop.solve_batch missing); "
                       "falling back to a single start from p0 instead of %d starts", plan.n_starts)
        plan.notes.append(f"multi-start unavailable: ran 1 start instead of {plan.n_starts}.")
        plan.n_starts = 1
    if plan.n_starts > 1:
        from .engine.multistart import run_multistart

        return run_multistart(
            fn, x, y, sigma, *args, n_starts=plan.n_starts, seed=plan.seed, sampler=plan.sampler, strategy=plan.strategy,
            chunk_size=getattr(plan.config, "chunk_size", None), source=source, config=plan.config,
            checkpoint=plan.checkpoint, progress=plan.progress,
        )
    if plan.strategy == "standard":
        return run_standard(fn, x, y, sigma, *args)
    if plan.strategy == "chunked":
        return run_chunked(fn, x, y, sigma, *args, plan.config.chunk_size)
    from .engine.streaming import run_streaming

    return run_streaming(
        fn, source, *args, config=plan.config, checkpoint=plan.checkpoint, progress=plan.progress,
        fingerprint=_fingerprint(plan),
    )


def _multistart_ready() -> bool:
    from .engine import loop

    return hasattr(loop, "solve_batch")


def _validation(plan: _Plan, fn, x, y, sigma, source, result: FitResult) -> None:
    """The QUALITY pass; re-fits run with the strategy the fit used (memory stays bounded)."""
    from .engine.validation import validate_fit

    t = time.perf_counter()
    refit = None
    if plan.strategy == "chunked":
        from .engine.strategies import run_chunked

        def refit(p):
            return run_chunked(fn, x, y, sigma, p, plan.lower, plan.upper, plan.options, plan.names, plan.config.chunk_size)

    validate_fit(fn, x, y, sigma, result, plan.options, source=source, seed=plan.seed, refit=refit)
    result.timings["validation"] = time.perf_counter() - t


def _restore_unweighted_stats(result: FitResult, fn, x, y) -> None:
    import jax.numpy as jnp

    f = np.asarray(fn(jnp.asarray(x), *[jnp.asarray(v) for v in result.popt]))
    result.stats.ssr = float(np.sum((y - f) ** 2))
    result.stats.sst = float(np.sum((y - y.mean()) ** 2))


def _finish(result: FitResult, plan: _Plan, t0: float, t_prep: float) -> FitResult:
    """Record every choice the front door made on the result."""
    multi = result.strategy_reason if plan.n_starts > 1 else ""
    result.strategy = plan.strategy
    result.strategy_reason = plan.reason + (f"; {multi.split('; ')[-1]}" if multi else "")
    result.budget = dict(plan.budget)
    result.workflow = plan.workflow
    result.goal = None if plan.goal is None else plan.goal.name.lower()
    result.tolerances = plan.tolerances
    result.loss = plan.options.loss
    result.timings["prepare"] = t_prep
    result.timings["total"] = time.perf_counter() - t0
    result.extra_warnings.extend(plan.notes)
    return result


# -- SciPy compatibility ----------------------------------------------------------------
def curve_fit(
    f,
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma: bool = False,
    check_finite: bool | None = None,
    bounds=(-inf, inf),
    method: str | None = None,
    jac=None,
    *,
    full_output: bool = False,
    nan_policy: str | None = None,
    **kwargs,
):
    """SciPy's ``curve_fit``: returns ``(popt, pcov)``, or with ``full_output=True``
    ``(popt, pcov, infodict, mesg, ier)``.

    As in SciPy: ``check_finite`` defaults to True unless ``nan_policy`` is given;
    ``method='lm'`` refuses bounds; a fit that does not converge raises ``RuntimeError``;
    an undetermined covariance warns with :class:`OptimizeWarning` and holds inf.
    ``method=None`` or ``"auto"`` routes by memory budget (standard, chunked or streaming);
    ``"trf"`` and ``"lm"`` run the standard in-memory solver (both are our trust-region
    reflective method; ``"lm"`` only differs in refusing bounds).

    ``jac``: we differentiate ``f`` exactly with forward-mode AD. A SciPy finite-difference
    name is accepted (AD supersedes it). A callable is checked once against the AD
    Jacobian at ``p0`` and, when it agrees, AD is used; if it disagrees a ValueError says so.

    ``infodict`` holds ``nfev``, ``fvec`` (the weighted residuals ``(f(x, popt) - y)/sigma``,
    whitened by the covariance's Cholesky factor for an ``(n, n)`` sigma, SciPy's sign) and
    ``result``, the full :class:`FitResult`. ``ier`` is ``int(result.status)`` (SciPy's
    ``least_squares`` codes 1-4 on success), ``mesg`` its message.

    Keyword arguments are those of :func:`fit` (``loss``, ``max_nfev`` -- or SciPy's alias
    ``maxfev`` --, ``ftol``, ``workflow``, ``goal``, ``memory_limit_gb``...). A model's own
    default bounds are not applied here: bounds are exactly what is passed, as in SciPy.
    """
    import warnings

    if "maxfev" in kwargs:
        if kwargs.get("max_nfev") is not None:
            raise V.FitTypeError("maxfev", kwargs["maxfev"], "pass either maxfev or max_nfev, not both.")
        kwargs["max_nfev"] = kwargs.pop("maxfev")
    workflow = kwargs.pop("workflow", "auto")
    goal = kwargs.pop("goal", None)
    memory_limit_gb = kwargs.pop("memory_limit_gb", None)
    V.check_kwargs(kwargs, tuple(k for k in FIT_KWARGS if k != "nan_policy") + ("maxfev",), "curve_fit")
    if check_finite is None:
        check_finite = nan_policy is None
    result = _fit_arrays(
        f, xdata, ydata, p0, sigma, absolute_sigma, check_finite, bounds, method, workflow, goal,
        memory_limit_gb, {**kwargs, "nan_policy": nan_policy}, where="curve_fit", model_bounds=False,
        jac=jac,
    )
    if not result.success:
        raise RuntimeError("Optimal parameters not found: " + result.message)
    popt, pcov = np.asarray(result.popt), np.asarray(result.pcov)
    if not np.all(np.isfinite(pcov)):
        warnings.warn("Covariance of the parameters could not be estimated", OptimizeWarning, stacklevel=2)
    if not full_output:
        return popt, pcov
    infodict = {"nfev": int(result.nfev), "fvec": _weighted_residuals(f, result, xdata, ydata, sigma, nan_policy), "result": result}
    return popt, pcov, infodict, result.message, int(result.status)


def _weighted_residuals(f, result: FitResult, xdata, ydata, sigma, nan_policy) -> np.ndarray:
    """SciPy's ``fvec``: ``(f(x, popt) - y) / sigma`` (or ``L^{-1}(f - y)`` for a covariance)."""
    import jax.numpy as jnp

    data = V.check_data(xdata, ydata, sigma, check_finite=False, nan_policy=nan_policy if nan_policy == "omit" else None)
    fn = _model_fn(_resolve_model(f, result.popt))
    r = np.asarray(fn(jnp.asarray(data.x), *[jnp.asarray(v) for v in result.popt])) - data.y
    if data.sigma is None:
        return r
    if data.sigma.ndim == 1:
        return r / data.sigma
    from jax.scipy.linalg import solve_triangular

    L = np.linalg.cholesky(data.sigma)
    return np.asarray(solve_triangular(jnp.asarray(L), jnp.asarray(r), lower=True))
