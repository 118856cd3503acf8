"""Planning a fit: the one place where every run-time choice is taken, and recorded why.

:func:`plan_fit` turns the size of the data and the caller's wishes into a frozen
:class:`FitPlan`. Everything else runs a plan and never decides again: :func:`~nlsq_tasks.fit`
and :func:`~nlsq_tasks.fit_source` call it (or take one through ``plan=``), the flow's
plan task calls it once and hands the plan to its fit task, and ``nlsq-flow plan`` prints it.

Precedence, for each choice:

- **strategy**: ``strategy=`` > ``method=`` (``"trf"``/``"lm"`` mean the standard in-memory
  solver) > the preset's fixed strategy > the memory-budget selector's decision; a
  covariance ``sigma (n, n)`` needs a strategy that takes one (standard);
- **chunk size**: ``chunk_size=`` > the preset's > the selector's sizing > :data:`DEFAULT_CHUNK_SIZE`;
- **tolerances**: explicit ``ftol``/``xtol``/``gtol`` > the preset's ``tolerance`` >
  :func:`~nlsq_tasks.workflow.calculate_adaptive_tolerances` of ``n_points`` and the goal;
- **multi-start**: ``n_starts=`` > the preset's > the goal's (ROBUST 10, QUALITY 20) > 1;
- **validation**: ``validate=`` > the preset's ``validate`` > goal QUALITY;
- **memory**: ``memory_limit_gb=`` > the free memory of the device the fit runs on (the
  first GPU on a GPU backend, else the host's).

``devices`` and ``executor`` say where the passes run. ``devices`` is the decision of
:func:`nlsq_tasks.engine.sharded.plan_devices` (backend, device kind, how many devices the
points are sharded over and why, processes; ``devices=`` or the preset's ``devices`` caps
it) plus, on a PBS/SLURM allocation or a multi-GPU node, the ``cluster`` this process saw.
The devices are those of the process that plans: plan where the fit will run.
``executor`` names who evaluates the passes: ``"local"`` (this process, in-graph or
sharded over its devices) or ``"dask"`` (the workers of a Dask cluster read and hold the
chunks and return partial sums: the fit runs as passes over a source, i.e. streaming, on
data the workers may keep resident).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from . import _validate as V
from .engine._sobol import SAMPLERS
from .limits import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

logger = logging.getLogger("nlsq_tasks")

PLAN_VERSION = 1
METHODS = (None, "auto", "trf", "lm")
# Who evaluates the passes: "local" (this process: in-graph, or sharded over its devices) or
# "dask" (workers of a Dask cluster read and hold the chunks; fit_source(executor=...)).
EXECUTORS = ("local", "dask")
GOAL_STARTS = {"ROBUST": 10, "QUALITY": 20}  # multi-start counts when only the goal asks for it

__all__ = ["FitPlan", "plan_fit", "DEFAULT_CHUNK_SIZE", "EXECUTORS"]


@dataclass(frozen=True)
class FitPlan:
    """What a fit will do and why. Plain data: ``to_dict()``/``from_dict()`` round-trip
    through JSON, so a plan travels between tasks and processes and is stored with the result.

    - ``strategy`` (a name in :func:`nlsq_tasks.strategies.strategy_names`) and ``reason``
      (one sentence with the numbers that decided it);
    - ``n_points``, ``n_features``, ``n_params``: the problem it was made for;
    - ``budget``: the memory budget (``MemoryBudget.to_dict()``);
    - ``tolerances`` (``ftol``, ``xtol``, ``gtol``), ``loss``, ``f_scale``, ``max_nfev``;
    - ``chunk_size``: points per chunk for strategies that chunk (and for any pass over a
      source); ``config``: the strategy's full configuration (``ChunkedConfig`` /
      ``StreamingConfig`` as a dict), None for standard;
    - ``n_starts``, ``seed``, ``sampler``: multi-start; ``validate``: the QUALITY pass;
    - ``workflow`` ("auto" or the preset's name) and ``goal`` (lower-case name or None);
    - ``devices`` (the ``Execution`` record of the devices the passes use, plus ``cluster``)
      and ``executor`` (one of :data:`EXECUTORS`).
    """

    strategy: str
    reason: str
    n_points: int
    n_features: int
    n_params: int
    budget: dict[str, Any]
    tolerances: dict[str, float]
    loss: str = "linear"
    f_scale: float = 1.0
    max_nfev: int | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    config: dict[str, Any] | None = None
    n_starts: int = 1
    seed: int = 0
    sampler: str = "sobol"
    validate: bool = False
    workflow: str = "auto"
    goal: str | None = None
    devices: dict[str, Any] = field(default_factory=dict)
    executor: str = "local"
    dask: dict[str, Any] | None = None  # executor "dask": the workers, their memory, residency and why

    # -- plain data ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["devices"] = dict(self.devices)
        out["budget"], out["tolerances"] = dict(self.budget), dict(self.tolerances)
        out["config"] = None if self.config is None else dict(self.config)
        out["dask"] = None if self.dask is None else dict(self.dask)
        out["version"] = PLAN_VERSION
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FitPlan":
        """The plan a ``to_dict()`` wrote (unknown keys are refused, naming them)."""
        if not isinstance(d, dict):
            raise V.FitTypeError("plan", d, f"a plan dict is needed; got {V.short(d)}.")
        d = dict(d)
        version = d.pop("version", PLAN_VERSION)
        if version != PLAN_VERSION:
            raise V.FitInputError("plan", version, f"plan version {version!r} is not supported; allowed: {PLAN_VERSION}.")
        fields = _known(cls, d, "plan")
        fields["devices"] = dict(fields.get("devices") or {})
        fields["tolerances"] = {k: float(v) for k, v in (fields.get("tolerances") or {}).items()}
        plan = cls(**fields)
        plan.check()
        return plan

    def replace(self, **changes) -> "FitPlan":
        """A copy with some fields changed (e.g. ``validate=False`` when the caller runs the
        QUALITY pass itself), checked again."""
        plan = dataclasses.replace(self, **changes)
        plan.check()
        return plan

    # -- derived ------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a plan no strategy could run (a hand-edited or foreign dict)."""
        from .strategies import strategy_names

        V.one_of("plan.strategy", self.strategy, strategy_names())
        V.one_of("plan.executor", self.executor, EXECUTORS)
        V.one_of("plan.sampler", self.sampler, SAMPLERS)
        V.one_of("plan.loss", self.loss, _losses())
        V.check_positive_int("plan.chunk_size", self.chunk_size, minimum=MIN_CHUNK_SIZE, allow_none=False)
        if self.chunk_size > MAX_CHUNK_SIZE:
            raise V.FitInputError("plan.chunk_size", self.chunk_size,
                                  f"plan.chunk_size={self.chunk_size} is not valid; allowed: {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}.")
        V.check_positive_int("plan.n_starts", self.n_starts, minimum=1, allow_none=False)
        V.check_positive_int("plan.n_params", self.n_params, minimum=1, allow_none=False)
        V.check_tolerances(dict(self.tolerances))

    def strategy_config(self):
        """The typed configuration (``ChunkedConfig``/``StreamingConfig``), or None."""
        if self.config is None:  # the standard strategy (checked first: every small fit asks)
            return None
        from .workflow import ChunkedConfig, StreamingConfig

        d = dict(self.config)
        kind = d.pop("kind", None)
        return {"chunked": ChunkedConfig, "streaming": StreamingConfig}[kind](**d)

    def execution(self):
        """The devices record as the engine's ``Execution`` (None when the plan has none)."""
        from .engine.sharded import Execution

        names = {f.name for f in dataclasses.fields(Execution)}
        if not names <= set(self.devices):
            return None
        return Execution(**{k: self.devices[k] for k in names})

    def solver_options(self, *, x_scale="jac", absolute_sigma: bool = False):
        from .engine.options import SolverOptions

        t = self.tolerances
        return SolverOptions(ftol=t["ftol"], xtol=t["xtol"], gtol=t["gtol"], max_nfev=self.max_nfev, loss=self.loss,
                             f_scale=self.f_scale, x_scale=x_scale, absolute_sigma=bool(absolute_sigma))

    def describe(self) -> str:
        """What will happen and why, as a few lines of text (``nlsq-flow plan`` prints it)."""
        t = self.tolerances
        lines = [
            f"strategy:    {self.strategy}",
            f"why:         {self.reason}",
            f"data:        {self.n_points:,} points x {self.n_features} feature(s), {self.n_params} parameters",
            f"workflow:    {self.workflow}   goal: {self.goal or '-'}",
            f"tolerances:  ftol={t['ftol']:.0e} xtol={t['xtol']:.0e} gtol={t['gtol']:.0e}",
            f"loss:        {self.loss} (f_scale={self.f_scale:g})   max_nfev: {self.max_nfev or 'default (100 x n_params)'}",
        ]
        if self.strategy != "standard":
            lines.append(f"chunks:      {self.chunk_size:,} points")
        lines.append(f"multi-start: {self.n_starts} start(s)" + (f" ({self.sampler}, seed {self.seed})" if self.n_starts > 1 else ""))
        lines.append(f"validation:  {'yes (QUALITY pass)' if self.validate else 'no'}")
        b = self.budget
        if b:
            lines.append("memory:      " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in b.items()))
        d, e = self.devices, self.execution()
        where = e.describe() if e is not None else "this process"
        cluster = d.get("cluster")
        lines.append(f"executor:    {self.executor}: {where}"
                     + (f"; cluster: {cluster.get('scheduler')} job {cluster.get('job_id')}" if cluster else ""))
        return "\n".join(lines)


def _known(cls, d: dict, what: str) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise V.FitInputError(what, unknown, f"{what} has unknown field(s) {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(sorted(names))}.")
    return dict(d)


def _losses():
    from .engine.loss import loss_names

    return loss_names()


# -- the planner ----------------------------------------------------------------------------
def plan_fit(
    model=None,
    *,
    n_points: int,
    n_features: int = 1,
    n_params: int | None = None,
    workflow="auto",
    goal=None,
    method: str | None = None,
    strategy: str | None = None,
    chunk_size: int | None = None,
    memory_limit_gb: float | None = None,
    use_gpu: bool | None = None,
    loss: str | None = None,
    f_scale: float | None = None,
    max_nfev: int | None = None,
    ftol: float | None = None,
    xtol: float | None = None,
    gtol: float | None = None,
    n_starts: int | None = None,
    seed: int | None = None,
    validate: bool | None = None,
    covariance: bool = False,
    devices: int | None = None,
    executor="local",
    has_sigma: bool = False,
    host_model: bool = False,
) -> FitPlan:
    """Decide how to fit a problem of ``n_points`` points (``n_features`` x-rows each) and
    ``n_params`` parameters (or those of ``model``: a callable, built-in name or expression).

    Every argument is checked here and a bad one raises :class:`~nlsq_tasks.FitInputError`
    naming it. ``workflow`` is ``"auto"``, a preset name, a preset YAML path or a ``Preset``;
    ``covariance=True`` says sigma will be an ``(n, n)`` matrix; ``use_gpu`` None plans
    against the memory of JAX's default backend; ``devices`` caps the devices the passes
    are sharded over. ``executor``: ``"local"``; ``"dask"`` (a live client given to
    ``fit_source``: the workers are asked when the fit starts); or a Dask choice
    (``"local-cluster:N"``, ``"tcp://host:8786"``), whose workers and memory the plan
    records with whether the chunks (``has_sigma``: three columns or two) stay resident.
    ``host_model``: the model is a NumPy function run on the host (its passes stay on one
    device: host callbacks inside a sharded multi-device program wait on each other's
    collectives). See the module docstring for precedence.
    """
    from .workflow import MemoryBudgetSelector

    n_points = V.check_positive_int("n_points", n_points, minimum=1, allow_none=False)
    n_features = V.check_positive_int("n_features", n_features, minimum=1, allow_none=False)
    if n_params is None:
        if model is None:
            raise V.FitInputError("n_params", None, "plan_fit needs the model or n_params.")
        n_params = len(resolve_model_spec(model).param_names)
    n_params = V.check_positive_int("n_params", n_params, minimum=1, allow_none=False)
    goal = resolve_goal(goal)
    preset = resolve_workflow(workflow)
    if goal is None and preset is not None and getattr(preset, "goal", None) is not None:
        goal = resolve_goal(preset.goal)
    method = V.one_of("method", method, METHODS, normalize=lambda m: m.lower() if isinstance(m, str) else m)
    executor, dask = _executor(executor, n_points, n_features, has_sigma)
    memory_limit_gb = _check_memory_limit(memory_limit_gb)
    cluster = _cluster()
    if use_gpu is None:
        use_gpu = _backend() == "gpu"

    selector = MemoryBudgetSelector()
    selector.select(n_points, n_params, n_features, memory_limit_gb=memory_limit_gb, goal=goal, use_gpu=bool(use_gpu))
    decision = selector.last_decision
    name, reason = _choose_strategy(strategy, method, preset, covariance, decision)
    if executor == "dask" and name != "streaming":
        # every strategy runs as passes over the chunks the workers hold (resident chunks:
        # the chunked fit, done where the data are)
        reason += "; run as passes over the chunks held by the Dask workers"
        name = "streaming"
    chunk = _chunk_size(chunk_size, preset, decision)
    from .strategies import get_strategy

    config = get_strategy(name).make_config(chunk, n_points, decision.config, preset)
    if config is not None and f"{config.chunk_size:,}" not in reason:
        reason += f"; chunks of {config.chunk_size:,} points"
    if cluster is not None:
        c = cluster
        reason += (f"; cluster: {c['scheduler']} job {c['job_id']}, {c['node_count']} node(s), "
                   f"{c['total_gpus']} GPU(s)")
    tolerances, loss, f_scale, max_nfev = _solver_choices(preset, goal, n_points, loss, f_scale, max_nfev,
                                                          ftol, xtol, gtol)
    n_starts, seed, sampler = _starts(n_starts, seed, preset, goal)
    if n_starts > 1:
        reason += f"; multi-start: {n_starts} {sampler} starts"
    validate = _validation(validate, preset, goal)
    if dask is not None:
        reason += f"; executor {dask['executor'].removeprefix('dask:')}: {dask['resident_reason']}"
    execution = _execution(devices, preset, name, config, n_points, n_starts, covariance)
    if host_model and execution.sharded:
        execution = dataclasses.replace(
            _execution(1, preset, name, config, n_points, n_starts, covariance),
            reason=f"{_execution(1, preset, name, config, n_points, n_starts, covariance).reason}; "
                   "a NumPy model runs on the host, so on one device")
    plan = FitPlan(
        strategy=name, reason=reason, n_points=n_points, n_features=n_features, n_params=n_params,
        budget=decision.budget.to_dict(), tolerances=tolerances, loss=loss, f_scale=f_scale, max_nfev=max_nfev,
        chunk_size=chunk, config=None if config is None else config.to_dict(), n_starts=n_starts, seed=seed,
        sampler=sampler, validate=validate,
        workflow="auto" if preset is None else str(getattr(preset, "name", workflow)),
        goal=None if goal is None else goal.name.lower(),
        devices={**execution.to_dict(), "cluster": cluster}, executor=executor, dask=dask,
    )
    plan.check()
    return plan


def _executor(choice, n_points, n_features, has_sigma) -> tuple[str, dict[str, Any] | None]:
    """("local", None), ("dask", None) for a live client decided at run time, or ("dask",
    the workers' record) for a Dask choice string (see nlsq_tasks.dask.plan_residency)."""
    if choice is None or (isinstance(choice, str) and choice.strip().lower() in EXECUTORS):
        return ("local" if choice is None else choice.strip().lower()), None
    from .dask import ExecutorChoiceError, plan_residency

    try:
        return "dask", plan_residency(choice, n_points, n_features, bool(has_sigma))
    except ExecutorChoiceError as exc:
        raise V.FitInputError("executor", choice, str(exc)) from exc


def _check_memory_limit(memory_limit_gb):
    if memory_limit_gb is None:
        return None
    if isinstance(memory_limit_gb, bool) or not isinstance(memory_limit_gb, numbers.Real):
        raise V.FitTypeError(
            "memory_limit_gb", memory_limit_gb,
            f"memory_limit_gb={memory_limit_gb!r} is a {type(memory_limit_gb).__name__}; allowed: a number > 0 (GB) or None.")
    if not (math.isfinite(float(memory_limit_gb)) and float(memory_limit_gb) > 0):
        raise V.FitInputError(
            "memory_limit_gb", memory_limit_gb, f"memory_limit_gb={memory_limit_gb!r} is not valid; allowed: a number > 0 (GB) or None."
        )
    return float(memory_limit_gb)


def _choose_strategy(requested, method, preset, covariance, decision) -> tuple[str, str]:
    from .strategies import get_strategy, strategy_names

    if requested is not None:
        requested = V.one_of("strategy", requested, strategy_names(),
                             normalize=lambda s: str(getattr(s, "value", s)).lower())
    forced = "standard" if method in ("trf", "lm") else None
    auto = decision.strategy.value
    if requested is not None and forced is not None and requested != forced:
        raise V.FitInputError(
            "strategy", requested,
            f"strategy={requested!r} conflicts with the method, which asks for the standard in-memory solver; "
            "use method=None (or 'auto') with strategy=.",
        )
    preset_strategy = preset_fixed_strategy(preset)
    if requested is not None:
        strategy, reason = requested, f"strategy={requested!r} requested (the memory budget alone gives {auto}: {decision.reason})"
    elif forced is not None:
        strategy, reason = forced, f"method asks for the standard in-memory solver (the memory budget alone gives {auto})"
    elif preset_strategy is not None:
        strategy, reason = preset_strategy, f"strategy {preset_strategy} fixed by preset {getattr(preset, 'name', '?')!r}"
    else:
        strategy, reason = auto, decision.reason
    if covariance and not get_strategy(strategy).takes_covariance:
        takers = [s for s in strategy_names() if get_strategy(s).takes_covariance]
        if requested is not None:
            raise V.FitInputError(
                "sigma", "(n, n)",
                f"a covariance matrix sigma (n, n) couples all points and needs strategy={' or '.join(map(repr, takers))}; "
                f"got strategy={requested!r}. Pass per-point standard deviations sigma (n,) to chunk or stream.",
            )
        reason += (f"; but sigma is a covariance matrix (n, n), which only {'/'.join(takers)} can use: "
                   f"{takers[0]}")
        strategy = takers[0]
    if strategy != auto and strategy == "standard" and not decision.budget.fits_in_memory:
        logger.warning("strategy standard chosen although the memory budget says %s: %s", auto, decision.reason)
    return strategy, reason


def _chunk_size(chunk_size, preset, decision) -> int:
    if chunk_size is not None:
        chunk = V.check_positive_int("chunk_size", chunk_size, minimum=MIN_CHUNK_SIZE)
        if chunk > MAX_CHUNK_SIZE:
            raise V.FitInputError("chunk_size", chunk, f"chunk_size={chunk} is not valid; allowed: {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}.")
        return int(chunk)
    return int(getattr(preset, "chunk_size", None) or getattr(decision.config, "chunk_size", None) or DEFAULT_CHUNK_SIZE)


def _solver_choices(preset, goal, n_points, loss, f_scale, max_nfev, ftol, xtol, gtol):
    from .workflow import calculate_adaptive_tolerances

    tols = dict(calculate_adaptive_tolerances(n_points, goal))
    if preset is not None and preset.tolerance is not None:
        tols.update({k: float(preset.tolerance) for k in ("ftol", "xtol", "gtol")})
    tols.update({k: v for k, v in (("ftol", ftol), ("xtol", xtol), ("gtol", gtol)) if v is not None})
    tols = V.check_tolerances(tols)
    tols = {k: float(tols[k]) for k in ("ftol", "xtol", "gtol")}
    loss = V.check_loss(loss or getattr(preset, "loss", None) or "linear")
    max_nfev = V.check_positive_int("max_nfev", max_nfev if max_nfev is not None else getattr(preset, "max_nfev", None))
    f_scale = V.check_f_scale(f_scale if f_scale is not None else getattr(preset, "f_scale", 1.0))
    return tols, loss, float(f_scale), (None if max_nfev is None else int(max_nfev))


def _starts(n, seed, preset, goal) -> tuple[int, int, str]:
    """(n_starts, seed, sampler): explicit keyword > preset > what the goal implies > one start."""
    if n is None and preset is not None and ("n_starts" in preset.model_fields_set or preset.n_starts > 1):
        n = preset.n_starts
    if n is None:
        n = GOAL_STARTS.get(goal.name, 1) if goal is not None else 1
    n = V.check_positive_int("n_starts", n, minimum=1, allow_none=False)
    if seed is None:
        seed = getattr(preset, "seed", None) or 0
    seed = V.check_positive_int("seed", seed, minimum=0, allow_none=False)
    sampler = getattr(preset, "multistart_sampler", None) or "sobol"
    return int(n), int(seed), str(sampler)


def _validation(validate, preset, goal) -> bool:
    from .workflow import OptimizationGoal

    if validate is not None and not isinstance(validate, (bool,)) and type(validate).__name__ != "bool_":
        raise V.FitTypeError("validate", validate, f"validate must be True or False; got {V.short(validate)}.")
    if validate is None:
        validate = bool(getattr(preset, "validate", False)) or goal is OptimizationGoal.QUALITY
    return bool(validate)


def _backend() -> str:
    import jax

    try:
        return str(jax.default_backend())
    except RuntimeError:  # no backend could be initialised
        return "cpu"


def _cluster() -> dict[str, Any] | None:
    """The PBS/SLURM allocation (or multi-GPU node) this process sits in, with its distributed config."""
    from .workflow import ClusterDetector, create_distributed_config

    cluster = ClusterDetector().detect()
    if cluster is None:
        return None
    return {**cluster.to_dict(), "distributed": create_distributed_config(cluster)}


def _execution(cap, preset, strategy, config, n_points, n_starts, covariance):
    """Which devices the passes run on: ``devices=`` > the preset's ``devices`` caps the
    visible ones, and the preset's ``per_device_batch`` the points per tile each device
    folds (see :func:`nlsq_tasks.engine.sharded.plan_devices`)."""
    from .engine.sharded import plan_devices

    if cap is None:
        cap = getattr(preset, "devices", None)
    cap = V.check_positive_int("devices", cap, minimum=1)
    try:
        return plan_devices(n_points, strategy, n_starts=n_starts, covariance=covariance, cap=cap,
                            chunk_size=getattr(config, "chunk_size", None),
                            batch_cap=getattr(preset, "per_device_batch", None))
    except ValueError as exc:
        raise V.FitInputError("devices", cap, str(exc)) from exc


# -- resolution of model, goal and workflow (shared with the front door) ---------------------
def resolve_model_spec(f, p0=None):
    """A Model from ``f``; a variadic ``f(x, *p)`` takes its parameter count from ``p0``."""
    import numpy as np

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


def resolve_goal(goal):
    from .workflow import OptimizationGoal

    try:
        g = OptimizationGoal.coerce(goal)
    except (TypeError, ValueError) as exc:
        valid = ", ".join(m.name.lower() for m in OptimizationGoal)
        raise V.FitInputError("goal", goal, f"Unknown goal {goal!r}; allowed: {valid} (or None).") from exc
    return None if g is None else OptimizationGoal.normalize(g)


def resolve_workflow(workflow):
    """None for "auto", else the loaded Preset (by name, YAML path, or the Preset itself)."""
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


def preset_fixed_strategy(preset) -> str | None:
    """The strategy a preset fixes, or None when it leaves the choice to the memory budget."""
    s = getattr(preset, "strategy", None) if preset is not None else None
    s = getattr(s, "value", s)
    return None if s in (None, "auto") else str(s)
