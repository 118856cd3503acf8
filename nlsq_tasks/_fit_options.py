"""The front door's keyword-only options, defined once.

:func:`~nlsq_tasks.fit` and :func:`~nlsq_tasks.fit_source` keep explicit, documented
keyword-only signatures (what users read in ``help()`` and their editor), and each turns
them into one :class:`FitOptions` with one call::

    options = FitOptions.gather(locals(), unknown, "fit")

Everything after the signature reads that object: the preparation (:func:`._plan.make_plan`),
the plan cache key, the planner's decisions (:meth:`FitOptions.decisions` are exactly
:func:`~nlsq_tasks.plan_fit`'s decision keywords), ``curve_fit``, ``fit_distributed``, and
``fit_batch``/``fit_global`` (which take the :data:`SOLVER_OPTIONS` subset). The names, their
order and their defaults here are the signatures' (``tests/engine/test_fit_options.py``
compares them), so an option is added here, to the signatures and to ``fit``'s docstring,
and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from . import _validate as V

__all__ = ["FitOptions", "OPTION_NAMES", "DECISIONS", "SOLVER_OPTIONS"]


def _decision(default=None):
    """A choice the plan makes (refused beside ``plan=``; a keyword of ``plan_fit``)."""
    return field(default=default, metadata={"decision": True})


def _solver(default=None, *, decision: bool = True):
    """A solver setting a batch of fits takes too (``fit_batch(**options)``)."""
    return field(default=default, metadata={"decision": decision, "solver": True})


@dataclass(frozen=True)
class FitOptions:
    """``fit()``'s keyword-only options, as given (None: "not given", the plan decides).
    Their meaning is documented once, in :func:`nlsq_tasks.fit`'s docstring."""

    plan: Any = None
    strategy: str | None = _decision()
    chunk_size: int | None = _decision()
    loss: str | None = _solver()
    f_scale: float | None = _solver()
    x_scale: Any = _solver("jac", decision=False)
    max_nfev: int | None = _solver()
    ftol: float | None = _solver()
    xtol: float | None = _solver()
    gtol: float | None = _solver()
    n_starts: int | None = _decision()
    seed: int | None = _decision()
    validate: bool | None = _decision()
    devices: int | None = _decision()
    fixed: Any = None
    nan_policy: str | None = None
    checkpoint: Any = None
    resume: bool = True
    progress: Callable | None = None

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def gather(cls, values: Mapping[str, Any], unknown: Mapping[str, Any], where: str) -> "FitOptions":
        """The options among ``values`` (a front door's ``locals()``), after refusing the
        ``**unknown`` keywords with a FitTypeError that lists the valid ones."""
        if unknown:
            V.check_kwargs(dict(unknown), OPTION_NAMES, where)
        return cls(**{name: values[name] for name in OPTION_NAMES})

    @classmethod
    def coerce(cls, options: "FitOptions | Mapping[str, Any] | None", where: str,
               allowed: Sequence[str] | None = None) -> "FitOptions":
        """``options`` as a FitOptions: one already is; a mapping of keywords (only
        ``allowed`` ones, default every option) is checked and completed with defaults."""
        if isinstance(options, FitOptions):
            return options
        if not options or (len(options) == 1 and options.get("nan_policy", ...) is None):
            return _DEFAULTS  # nothing given (curve_fit's usual call): the defaults, made once
        given = dict(options or {})
        V.check_kwargs(given, OPTION_NAMES if allowed is None else allowed, where)
        return cls(**given)

    def replace(self, **changes) -> "FitOptions":
        if all(getattr(self, name) is value for name, value in changes.items()):
            return self  # nothing changes (the common fixed=None): no copy on every small fit
        return dataclasses.replace(self, **changes)

    # -- reading ----------------------------------------------------------------------------
    def keywords(self) -> dict[str, Any]:
        """Every option by name: ``fit(..., **options.keywords())`` passes them on."""
        return dict(vars(self))

    def decisions(self) -> dict[str, Any]:
        """The choices for the planner: ``plan_fit(..., **options.decisions())``."""
        return {name: getattr(self, name) for name in DECISIONS}

    def given_decisions(self) -> list[str]:
        """Decisions given explicitly (refused together with ``plan=``)."""
        return [name for name in DECISIONS if getattr(self, name) is not None]


_FIELDS = dataclasses.fields(FitOptions)
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in _FIELDS)
DECISIONS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.metadata.get("decision"))
SOLVER_OPTIONS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.metadata.get("solver"))
_DEFAULTS = FitOptions()  # frozen: one shared instance of the defaults
