"""How many chunks each worker of a map has submitted and not yet yielded: the runner keeps that
many in flight, and the model counts their memory against the limit.

Results are yielded in order, and a chunk is submitted only as the oldest is collected: while one
worker runs a slow chunk, the others have only the chunks already in flight to go on with.
"""

from __future__ import annotations

# At least this many each; up to MAX_CHUNKS where the measured items and results of that many fit
# in BYTES_PER_WORKER. (docs/decisions.md#chunks-in-flight)
MIN_CHUNKS = 4
MAX_CHUNKS = 64
BYTES_PER_WORKER = 16 << 20


def chunks_per_worker(chunksize: int, item_bytes: float) -> int:
    """Chunks in flight per worker, for chunks of ``chunksize`` items of ``item_bytes`` each
    (an input and its result, pickled); the least where their size is unknown (0)."""
    if item_bytes <= 0:
        return MIN_CHUNKS
    fitting = int(BYTES_PER_WORKER / (max(1, chunksize) * item_bytes))
    return max(MIN_CHUNKS, min(MAX_CHUNKS, fitting))
