"""standard: all data and the full Jacobian in memory (padded to a size bucket, tiled).
The only strategy that takes a covariance sigma ``(n, n)``; multi-start solves every
start at once on the full data (one ``vmap``-ed computation)."""

from __future__ import annotations

from . import Problem, StrategySpec


def _solve(problem: Problem):
    from ..engine.strategies import run_standard

    return run_standard(problem.fn, problem.x, problem.y, problem.sigma, *problem.start_args(),
                        progress=problem.progress)


STRATEGY = StrategySpec(
    name="standard",
    summary="everything in memory: the data and the full Jacobian",
    in_memory=True,
    takes_covariance=True,
    reports_progress=False,
    solve=_solve,
)
