"""The strategy registry: every strategy is one module here, registered once.

A strategy says how the normal equations are evaluated over the data (all in memory, in
chunks of in-memory data, in passes over a chunk source). The trust-region step, the
convergence tests, the covariance and :class:`~nlsq_tasks.FitResult` are shared; a
strategy only calls its engine entry point. Every list of strategies in the project (the
``Strategy`` enum, preset validation, the front door's checks, the flow's request form,
the CLI and multi-start) is :func:`strategy_names`.

To add one: write ``nlsq_tasks/strategies/<name>.py`` defining ``STRATEGY =
StrategySpec(...)`` and add its module name to :data:`BUILTIN` (see ARCHITECTURE.md).
Registration order is the order users see (the enum, the form, ``--help``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["StrategySpec", "Problem", "register", "get_strategy", "strategy_names", "BUILTIN"]

BUILTIN = ("standard", "chunked", "streaming")  # modules of this package, in display order


@dataclass
class Problem:
    """What a strategy runs: the model ``fn``, the data (arrays ``x, y, sigma`` in memory, or
    ``source`` for strategies that read one), the start and bounds, the solver options,
    and the plan's chunking, checkpoint sink, progress callback and problem fingerprint."""

    fn: Callable
    x: Any
    y: Any
    sigma: Any
    source: Any
    p0: Any
    lower: Any
    upper: Any
    options: Any
    names: list
    chunk_size: int
    config: Any = None
    checkpoint: Any = None
    progress: Optional[Callable] = None
    fingerprint: Optional[str] = None

    def start_args(self, p0=None) -> tuple:
        return (self.p0 if p0 is None else p0, self.lower, self.upper, self.options, self.names)


@dataclass(frozen=True)
class StrategySpec:
    """One strategy.

    - ``in_memory``: the data are arrays in memory (``fit_source`` reads a source into
      arrays first); else the strategy makes passes over ``Problem.source``;
    - ``takes_covariance``: can fit with an ``(n, n)`` sigma;
    - ``reports_progress``: emits its own progress events per chunk (the front door
      otherwise frames the run with "start" and "done" events);
    - ``solve(problem)``: the fit from ``problem.p0``;
    - ``refine(problem, start, rank)``: a full-data fit from a multi-start candidate, or
      None when multi-start solves every start on the full data at once (batched);
    - ``make_config(chunk_size, n_points, selector_config, preset)``: the typed config the
      plan records (None when the strategy does not chunk);
    - ``validation_refit(problem)``: how the QUALITY pass refits perturbed data with this
      strategy (a callable ``p0 -> FitResult``), or None for the pass's default.
    """

    name: str
    summary: str
    in_memory: bool
    takes_covariance: bool
    reports_progress: bool
    solve: Callable[[Problem], Any]
    refine: Optional[Callable[[Problem, Any, int], Any]] = None
    make_config: Callable[..., Any] = lambda chunk_size, n_points, selector_config, preset: None
    validation_refit: Callable[[Problem], Optional[Callable]] = lambda problem: None

    @property
    def chunks(self) -> bool:
        return self.refine is not None or not self.in_memory


_REGISTRY: dict[str, StrategySpec] = {}


def register(spec: StrategySpec) -> StrategySpec:
    """Add a strategy; a name registers once (a second registration is a programming error)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"strategy {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    for module in BUILTIN:
        register(importlib.import_module(f".{module}", __name__).STRATEGY)


def strategy_names() -> tuple[str, ...]:
    """Registered strategy names, in registration order."""
    return tuple(_REGISTRY)


def get_strategy(name: str) -> StrategySpec:
    try:
        return _REGISTRY[str(getattr(name, "value", name))]
    except KeyError:
        raise ValueError(f"strategy={name!r} is not registered; allowed: {', '.join(map(repr, _REGISTRY))}") from None


_load_builtin()
