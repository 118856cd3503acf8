"""Limits shared by the library, the flows and the request form: one place, imported everywhere.

Chunk sizes are points per chunk. Below 1e3 points a chunk's fixed cost (a pass step, a
read, a host round trip) dominates; above 1e6 the chunk's Jacobian rows alone take
``1e6 * n_params * 8`` bytes, which is what chunking is there to bound.
"""

MIN_CHUNK_SIZE = 1_000
MAX_CHUNK_SIZE = 1_000_000
# A pass over a source uses this when nothing sized the chunks (a forced strategy, a reader).
DEFAULT_CHUNK_SIZE = 65_536
