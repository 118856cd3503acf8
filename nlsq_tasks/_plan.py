"""Planning a fit: every decision the front door takes before the solver starts.

:func:`make_plan` validates the non-data arguments and resolves, in this order:

1. the model (:func:`nlsq_tasks.models.resolve_model`: callable, built-in name, expression),
   the goal (``GLOBAL`` is ``ROBUST``) and the preset (``workflow`` other than ``"auto"``);
2. the bounds (explicit, else -- for :func:`~nlsq_tasks.fit` -- the model's defaults) and
   the start (explicit ``p0`` inside the bounds, else the model's guess, else a feasible point);
3. the tolerances: explicit keyword > preset > ``calculate_adaptive_tolerances(n, goal)``;
4. the strategy: ``strategy=`` > ``method=`` ("trf"/"lm" mean the standard in-memory
   solver) > the preset's fixed strategy > the memory-budget selector's decision;
   a covariance ``sigma (n, n)`` always runs standard;
5. multi-start (keyword > preset > goal: ROBUST 10, QUALITY 20 starts) and the QUALITY
   validation pass (keyword > preset > goal QUALITY).

Only then is the model evaluated, on a few points at the start, so that every cheap
mistake is reported before anything is traced.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _validate as V
from .engine.options import SolverOptions

logger = logging.getLogger("nlsq_tasks")

inf = math.inf
# The default of ``bounds``: identity tells "not given" (a built-in model's own bounds
# apply) from an explicit ``(-inf, inf)`` (truly unbounded).
UNBOUNDED = (-inf, inf)
METHODS = (None, "auto", "trf", "lm")


@dataclass
class Plan:
    """What will run and why: the resolved model and start, solver options, strategy with
    its reason and budget, multi-start and validation settings. ``notes`` become result warnings."""

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
    execution: Any = None  # engine.sharded.Execution: devices and processes the passes use, and why

    @property
    def tolerances(self) -> dict[str, float]:
        o = self.options
        return {"ftol": o.ftol, "xtol": o.xtol, "gtol": o.gtol}


def model_fn(model):
    return model.fn if hasattr(model, "fn") else model


# -- resolution of f, goal, workflow and method -----------------------------------------
def resolve_model_spec(f, p0=None):
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
        raise V.FitInputError("goal", goal, f"Unknown goal {goal!r}; allowed: {valid} (or None).") from exc
    return None if g is None else OptimizationGoal.normalize(g)


def _resolve_workflow(workflow):
    """None for "auto", else the loaded Preset (by name or YAML path)."""
    if workflow is None or (isinstance(workflow, str) and workflow.strip().lower() == "auto"):
        return None
    from .workflow import Preset, list_presets, load_preset

    if isinstance(workflow, Preset):  # the flows pass the validated preset itself
        return workflow
    if not isinstance(workflow, str) and not hasattr(workflow, "__fspath__"):
        raise V.FitTypeError("workflow", workflow, f"workflow must be 'auto', a preset name or a YAML path; got {V.short(workflow)}.")
    try:
        return load_preset(workflow)
    except (ValueError, KeyError, FileNotFoundError, TypeError) as exc:
        raise V.FitInputError(
            "workflow",
            workflow,
            f"Unknown workflow {workflow!r}: {exc} (allowed: 'auto', "
            f"{', '.join(map(repr, list_presets()))}, or a preset YAML path)",
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
def make_plan(
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
) -> Plan:
    """Validate the non-data arguments and take every decision; nothing is traced but the probe."""
    model = resolve_model_spec(f, p0)
    names = list(model.param_names)
    goal = _resolve_goal(goal)
    preset = _resolve_workflow(workflow)
    if goal is None and preset is not None and getattr(preset, "goal", None) is not None:
        goal = _resolve_goal(preset.goal)

    # Bounds: explicit, else (for fit) the model's own, e.g. a positive width.
    from_model = False
    if bounds is UNBOUNDED and model_bounds and str(method).lower() != "lm" and callable(getattr(model, "default_bounds", None)):
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
    execution = _execution(kwargs, preset, strategy, config, n_points, n_starts, covariance)
    # Last, once every cheap check has passed: the model itself, on the whole x (JAX or
    # NumPy, pointwise or whole: see _model_prep).
    from ._model_prep import prepare_model

    model = prepare_model(model, probe, p_start, names, n_points=n_points, jac=jac, lower=lower, upper=upper)
    if getattr(model, "host_model", False) and getattr(execution, "sharded", False):
        # host callbacks inside a multi-device program wait on each other's collectives
        # (XLA aborts): a NumPy model's passes run on one device
        execution = _execution({**kwargs, "devices": 1}, preset, strategy, config, n_points, n_starts, covariance)
        execution = dataclasses.replace(execution, reason=f"{execution.reason}; a NumPy model runs on the host, "
                                        "so on one device")
    return Plan(
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
        execution=execution,
    )


def _execution(kwargs, preset, strategy, config, n_points, n_starts, covariance):
    """Which devices the passes run on: ``devices=`` > the preset's ``devices`` caps the
    visible ones (see :func:`nlsq_tasks.engine.sharded.plan_devices`)."""
    from .engine.sharded import plan_devices

    cap = kwargs.get("devices")
    if cap is None:
        cap = getattr(preset, "devices", None)
    cap = V.check_positive_int("devices", cap, minimum=1)
    try:
        return plan_devices(n_points, strategy, n_starts=n_starts, covariance=covariance, cap=cap,
                            chunk_size=getattr(config, "chunk_size", None))
    except ValueError as exc:
        raise V.FitInputError("devices", cap, str(exc)) from exc


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
        if isinstance(memory_limit_gb, bool) or not isinstance(memory_limit_gb, numbers.Real):
            raise V.FitTypeError(
                "memory_limit_gb", memory_limit_gb,
                f"memory_limit_gb={memory_limit_gb!r} is a {type(memory_limit_gb).__name__}; allowed: a number > 0 (GB) or None.")
        ok = math.isfinite(float(memory_limit_gb)) and float(memory_limit_gb) > 0
        if not ok:
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
