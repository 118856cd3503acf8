"""Preparing a fit: the front door's checks around the one planner.

:func:`prepare` validates the non-data arguments and resolves, in this order:

1. the model (:func:`nlsq_tasks.models.resolve_model`: callable, built-in name, expression);
2. the bounds (explicit, else -- for :func:`~nlsq_tasks.fit` -- the model's defaults) and
   the start (explicit ``p0`` inside the bounds, else the model's guess, else a feasible point);
3. the :class:`~nlsq_tasks.planning.FitPlan`: the caller's, or :func:`~nlsq_tasks.planning.plan_fit`'s
   (strategy, tolerances, loss, chunking, multi-start, validation: every decision and why);
4. the solver options from the plan.

Only then is the model evaluated, on a few points at the start, so that every cheap
mistake is reported before anything is traced.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _validate as V
from ._fit_options import FitOptions
from .engine.options import SolverOptions
from .planning import FitPlan, METHODS, plan_fit, resolve_model_spec  # noqa: F401  (resolve_model_spec re-exported)

logger = logging.getLogger("nlsq_tasks")

inf = math.inf
# The default of ``bounds``: identity tells "not given" (a built-in model's own bounds
# apply) from an explicit ``(-inf, inf)`` (truly unbounded).
UNBOUNDED = (-inf, inf)


@dataclass
class Plan:
    """A :class:`FitPlan` with what running it needs: the resolved model and start, bounds,
    solver options, checkpoint sink and progress callback. ``notes`` become result warnings."""

    fit_plan: FitPlan
    model: Any
    names: list[str]
    p0: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    options: SolverOptions
    checkpoint: Any
    progress: Callable | None
    notes: list[str] = field(default_factory=list)

    strategy = property(lambda self: self.fit_plan.strategy)
    reason = property(lambda self: self.fit_plan.reason)
    n_starts = property(lambda self: self.fit_plan.n_starts)
    seed = property(lambda self: self.fit_plan.seed)
    sampler = property(lambda self: self.fit_plan.sampler)
    validate = property(lambda self: self.fit_plan.validate)
    workflow = property(lambda self: self.fit_plan.workflow)
    goal = property(lambda self: self.fit_plan.goal)
    chunk_size = property(lambda self: self.fit_plan.chunk_size)

    @property
    def execution(self):
        """The planned :class:`~nlsq_tasks.engine.sharded.Execution` (devices the passes use).
        Made once per fit plan (an Execution is frozen): copies of this Plan share it."""
        memo = self.__dict__.get("_execution")
        if memo is None or memo[0] is not self.fit_plan:
            memo = (self.fit_plan, self.fit_plan.execution())
            self.__dict__["_execution"] = memo
        return memo[1]

    @property
    def config(self):
        return self.fit_plan.strategy_config()

    @property
    def tolerances(self) -> dict[str, float]:
        return dict(self.fit_plan.tolerances)


def model_fn(model):
    return model.fn if hasattr(model, "fn") else model


def _method_bounds(method, lower, upper) -> None:
    """SciPy's rule: 'lm' works for unconstrained problems only."""
    method = V.one_of("method", method, METHODS, normalize=lambda m: m.lower() if isinstance(m, str) else m)
    if method == "lm" and (np.any(np.isfinite(lower)) or np.any(np.isfinite(upper))):
        raise V.FitInputError(
            "method",
            "lm",
            "method='lm' only works for unconstrained problems (SciPy's rule); use method='trf' or 'auto' with bounds.",
        )


def _given_plan(plan, given: list[str], workflow, goal, memory_limit_gb, method, n_params, n_features,
                covariance) -> FitPlan:
    """The caller's plan, checked against the problem; no decision is taken again."""
    if isinstance(plan, dict):
        plan = FitPlan.from_dict(plan)
    if not isinstance(plan, FitPlan):
        raise V.FitTypeError("plan", plan, f"plan must be a FitPlan (from nlsq_tasks.plan_fit) or its dict; got {V.short(plan)}.")
    both = list(given)
    both += [k for k, v, default in (("workflow", workflow, "auto"), ("goal", goal, None),
                                     ("memory_limit_gb", memory_limit_gb, None)) if v is not default and v != default]
    if str(method).lower() not in ("none", "auto"):
        both.append("method")
    if both:
        raise V.FitInputError(
            "plan", ", ".join(both),
            f"plan= already holds every decision; do not pass {', '.join(both)} with it "
            "(make the plan with them: plan_fit(..., " + ", ".join(f"{k}=..." for k in both) + ")).",
        )
    if plan.n_params != n_params:
        raise V.FitInputError("plan", plan.n_params,
                              f"the plan is for {plan.n_params} parameters but the model has {n_params}.")
    if plan.n_features != n_features:
        raise V.FitInputError("plan", plan.n_features,
                              f"the plan is for {plan.n_features} x feature(s) but the data have {n_features}.")
    from .strategies import get_strategy

    if covariance and not get_strategy(plan.strategy).takes_covariance:
        raise V.FitInputError("sigma", "(n, n)", f"a covariance matrix sigma (n, n) cannot run with the plan's "
                              f"strategy {plan.strategy!r}; plan with covariance=True.")
    return plan


# -- preparing -------------------------------------------------------------------------------
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
    options: FitOptions | dict[str, Any],
    absolute_sigma: bool,
    covariance: bool,
    model_bounds: bool = True,
    jac=None,
    executor: str = "local",
) -> Plan:
    """Validate the non-data arguments and plan (or take ``options.plan``); nothing is
    traced but the probe. ``options``: fit()'s keyword-only options (a FitOptions, or a
    dict of some of them)."""
    options = FitOptions.coerce(options, "fit")
    model = resolve_model_spec(f, p0)
    names = list(model.param_names)

    # Bounds: explicit, else (for fit) the model's own, e.g. a positive width.
    from_model = False
    if bounds is UNBOUNDED and model_bounds and str(method).lower() != "lm" and callable(getattr(model, "default_bounds", None)):
        lo, hi = model.default_bounds()
        lower, upper = V.check_bounds((lo, hi), names)
        from_model = bool(np.any(np.isfinite(lower)) or np.any(np.isfinite(upper)))
    else:
        lower, upper = V.check_bounds(bounds, names)
    _method_bounds(method, lower, upper)

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

    if options.plan is not None:
        fit_plan = _given_plan(options.plan, options.given_decisions(), workflow, goal, memory_limit_gb, method,
                               len(names), n_features, covariance)
        if fit_plan.executor != executor:
            raise V.FitInputError("executor", executor, f"the plan was made for executor {fit_plan.executor!r} but "
                                  f"this run's is {executor!r}; plan with plan_fit(..., executor={executor!r}).")
    else:
        def planned(host_model: bool) -> FitPlan:
            return plan_fit(n_points=n_points, n_features=n_features, n_params=len(names), workflow=workflow,
                            goal=goal, method=method, memory_limit_gb=memory_limit_gb, covariance=covariance,
                            executor=executor, host_model=host_model, **options.decisions())

        fit_plan = planned(False)
    solver_options = fit_plan.solver_options(x_scale=V.check_x_scale(options.x_scale, names),
                                             absolute_sigma=absolute_sigma)
    checkpoint = V.check_checkpoint(options.checkpoint)
    if checkpoint is not None and options.resume is False:
        from .engine.checkpoint import FreshStartSink

        checkpoint = FreshStartSink(checkpoint)
    progress = V.check_callable_or_none("progress", options.progress)
    # Last, once every cheap check has passed: the model itself, on the whole x (JAX or
    # NumPy, pointwise or whole: see _model_prep).
    from ._model_prep import prepare_model

    model = prepare_model(model, probe, p_start, names, n_points=n_points, jac=jac, lower=lower, upper=upper)
    if getattr(model, "host_model", False) and fit_plan.devices.get("sharded"):
        # a NumPy model's passes stay on one device: the planner, told so, says why
        if options.plan is not None:
            raise V.FitInputError("plan", fit_plan.devices.get("n_devices"), "the plan shards the passes over "
                                  "several devices, but a NumPy model runs on the host, so on one device; plan with "
                                  "plan_fit(..., host_model=True) or devices=1.")
        fit_plan = planned(True)
    return Plan(fit_plan=fit_plan, model=model, names=names, p0=p_start, lower=lower, upper=upper, options=solver_options,
                checkpoint=checkpoint, progress=progress)


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


