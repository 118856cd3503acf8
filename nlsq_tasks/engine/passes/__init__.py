"""The pass interface: how the trust-region driver gets sums over all the data.

A *pass* evaluates a :class:`Reduction` (what is summed: the normal equations for the
solver, residual statistics for validation) at one or a stack of ``K`` trial parameter
vectors over every chunk of the data, and returns the chunks' partials folded with the
reduction's ``combine`` **in chunk order**, starting from its ``zero``::

    acc = zero
    for chunk in chunks (0, 1, ..., n-1):       # always this order
        acc = combine(acc, partial(params, chunk))

Executors differ only in *where* ``partial`` runs. They never add partials themselves
(``combine`` is not assumed to be ``+``: the validation reduction glues sign runs across
chunk seams, and a TSQR reduction would stack triangular factors), so a result does not
depend on the executor or the worker count.

Two executor shapes, for the two kinds of driver:

- **in-graph** (inside the compiled trust-region ``while_loop``): a traceable function
  ``params (p,) -> reduction``. :func:`in_graph_executor` builds the in-memory one
  (:func:`tiled_pass`: tiles in a ``lax.scan``, folded in tile order); the standard and
  chunked strategies differ only in its :class:`Layout` (:func:`lay_out_standard`,
  :func:`lay_out_chunked`). :func:`~nlsq_tasks.engine.loop.drive` runs the whole fit
  from any such function, so a sharded executor is a ``shard_map`` of
  :func:`tiled_pass` whose per-device partials are folded with ``combine`` in device
  order.
- **host** (the streaming driver, the validation pass): a :class:`HostExecutor` with
  ``chunk_ids()`` and ``partials(params_stack (K, p), start, y_moments)`` yielding one
  :class:`ChunkPartial` per chunk, in order; the driver folds (and checkpoints between
  chunks, which is what makes resume bit-identical). :class:`SourceExecutor` evaluates
  a :class:`~nlsq_tasks.engine.sources.ChunkSource` in process; a Dask executor maps
  chunk ids to workers and yields their partials in order. :func:`evaluate` is the
  whole-pass fold for callers that need no cursor.
"""

from .host import (
    TILE,
    ChunkPartial,
    HostExecutor,
    SourceExecutor,
    evaluate,
    merge_moments,
    pad_chunk,
    stacked_combine_jit,
    zeros,
)
from .in_memory import (
    STANDARD_TILE,
    Layout,
    bucket_size,
    in_graph_executor,
    lay_out,
    lay_out_chunked,
    lay_out_standard,
    standard_layout,
    tile_partial,
    tiled_pass,
)
from .reductions import (
    LeastSquaresFactorPass,
    NormalEquationsPass,
    Reduction,
    ResidualStats,
    ResidualStatsPass,
    fold,
    stacked_combine,
)

__all__ = [
    "TILE", "ChunkPartial", "HostExecutor", "SourceExecutor", "evaluate", "merge_moments", "pad_chunk",
    "stacked_combine_jit", "zeros", "STANDARD_TILE", "Layout", "bucket_size", "in_graph_executor", "lay_out",
    "lay_out_chunked", "lay_out_standard", "standard_layout", "tile_partial", "tiled_pass", "LeastSquaresFactorPass", "NormalEquationsPass", "Reduction",
    "ResidualStats", "ResidualStatsPass", "fold", "stacked_combine",
]
