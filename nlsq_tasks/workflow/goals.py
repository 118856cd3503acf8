"""Optimization goals: what a fit should favour when it has a choice.

A goal never changes *which* strategy fits in memory; it changes the tolerances
(QUALITY one tier tighter, FAST one tier looser), whether multi-start runs, and, for
MEMORY_EFFICIENT, how large the chunks are.
"""

from __future__ import annotations

from enum import Enum


class OptimizationGoal(Enum):
    """Optimization priority.

    - ``FAST``: one tier looser tolerances, local optimization only.
    - ``ROBUST``: tolerances for the data size, multi-start for a better optimum.
    - ``GLOBAL``: a synonym of ROBUST (:meth:`normalize` maps it there).
    - ``MEMORY_EFFICIENT``: tolerances for the data size, smaller chunks.
    - ``QUALITY``: one tier tighter tolerances, multi-start and a validation pass.
    """

    FAST = 1
    ROBUST = 2
    GLOBAL = 3
    MEMORY_EFFICIENT = 4
    QUALITY = 5

    @classmethod
    def normalize(cls, goal: "OptimizationGoal") -> "OptimizationGoal":
        """Return ROBUST for GLOBAL (they behave the same), the goal itself otherwise."""
        goal = cls.coerce(goal)
        return cls.ROBUST if goal is cls.GLOBAL else goal

    @classmethod
    def parse(cls, name: str) -> "OptimizationGoal":
        """The goal named ``name``, case-insensitively (``"quality"``, ``"Memory_Efficient"``).

        Hyphens and spaces are read as underscores, so ``"memory-efficient"`` works too.
        """
        if not isinstance(name, str):
            raise TypeError(f"goal must be a string naming an OptimizationGoal, got {name!r} ({type(name).__name__})")
        key = name.strip().upper().replace("-", "_").replace(" ", "_")
        try:
            return cls[key]
        except KeyError:
            valid = ", ".join(m.name.lower() for m in cls)
            raise ValueError(f"goal {name!r} is not a known optimization goal; valid goals are: {valid}") from None

    @classmethod
    def coerce(cls, goal: "OptimizationGoal | str | None", *, argument: str = "goal") -> "OptimizationGoal | None":
        """Accept a member, its name (any case) or None; reject anything else with a TypeError."""
        if goal is None or isinstance(goal, cls):
            return goal
        if isinstance(goal, str):
            return cls.parse(goal)
        raise TypeError(
            f"{argument} must be an OptimizationGoal, a goal name or None, got {goal!r} ({type(goal).__name__})"
        )
