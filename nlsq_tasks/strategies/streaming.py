"""streaming: one pass over a chunk source per iteration (out of core, checkpointed,
resumable). Multi-start screens on a sample of the source; each refinement is its own
problem and checkpoints under ``checkpoint.child("refine-<rank>")``."""

from __future__ import annotations

from . import Problem, StrategySpec


def _solve(problem: Problem):
    from ..engine.streaming import run_streaming

    return run_streaming(problem.fn, problem.source, *problem.start_args(), config=problem.config,
                         checkpoint=problem.checkpoint, progress=problem.progress, fingerprint=problem.fingerprint)


def _refine(problem: Problem, start, rank: int):
    from ..engine.streaming import run_streaming

    sink = None if problem.checkpoint is None else problem.checkpoint.child(f"refine-{rank}")
    return run_streaming(problem.fn, problem.source, *problem.start_args(start), config=problem.config,
                         checkpoint=sink, progress=problem.progress)


def _config(chunk_size, n_points, selector_config, preset):
    from ..workflow import StreamingConfig

    fields = dict(selector_config.__dict__) if isinstance(selector_config, StreamingConfig) else {}
    if preset is not None:
        ck = preset.checkpoint
        fields.update(enable_checkpoints=bool(ck.enabled), checkpoint_every_chunks=int(ck.every_chunks))
    fields["chunk_size"] = int(chunk_size)
    return StreamingConfig(**fields)


STRATEGY = StrategySpec(
    name="streaming",
    summary="passes over a chunk source: out of core, checkpointed, resumable",
    in_memory=False,
    takes_covariance=False,
    reports_progress=True,
    solve=_solve,
    refine=_refine,
    make_config=_config,
)
