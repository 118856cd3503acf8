"""chunked: the data in memory, the Jacobian formed ``chunk_size`` rows at a time.
Multi-start screens on a subsample and refines the best candidates with this strategy."""

from __future__ import annotations

from . import Problem, StrategySpec


def _solve(problem: Problem, p0=None):
    from ..engine.strategies import run_chunked

    return run_chunked(problem.fn, problem.x, problem.y, problem.sigma, *problem.start_args(p0),
                       problem.chunk_size, progress=None if p0 is not None else problem.progress)


def _refine(problem: Problem, start, rank: int):
    return _solve(problem, start)


def _config(chunk_size, n_points, selector_config, preset):
    from ..workflow import ChunkedConfig

    return ChunkedConfig(chunk_size=int(chunk_size), n_chunks=max(1, -(-int(n_points) // int(chunk_size))))


def _validation_refit(problem: Problem):
    # the QUALITY pass refits perturbed data; chunked keeps its memory bound while doing so
    return lambda p0: _solve(problem, p0)


STRATEGY = StrategySpec(
    name="chunked",
    summary="data in memory, the Jacobian chunk by chunk",
    in_memory=True,
    takes_covariance=False,
    reports_progress=False,
    solve=_solve,
    refine=_refine,
    make_config=_config,
    validation_refit=_validation_refit,
)
