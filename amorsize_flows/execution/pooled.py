"""A parallel plan's loop: chunks submitted to a pool, results yielded in input order, a bounded
number of chunks in flight, and the pool stopped on every way out."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from typing import TYPE_CHECKING, Any

from ..data.errors import MapCancelledError
from ..decide import in_flight
from ..measure.run_stats import RunStats
from .pools import PoolSettings, WorkerPool, open_pool

if TYPE_CHECKING:
    from ..data.plan import Plan

__all__ = ["PoolSettings", "run_pooled"]

# How often a wait checks for cancellation: fast enough for a person, rare enough to cost nothing.
CANCEL_POLL_SECONDS = 0.1

_Pending = deque[tuple[int, int, Future[Any]]]  # (first item's index, items, future) of chunks


def run_pooled(
    plan: Plan,
    items: Iterator[Any],
    settings: PoolSettings,
    *,
    start_index: int,
    stats: RunStats,
    on_chunk: Callable[[int], None] | None,
    winding_down: Callable[[int], None] | None = None,
) -> Iterator[list[Any]]:
    """Yield each chunk's results in order, submitting the next chunk as the oldest is yielded:
    at most ``in_flight`` chunks per worker are held (docs/decisions.md#chunks-in-flight).

    Once every chunk is submitted, ``winding_down`` is told after each yield how many workers
    can still be busy (the chunks not yet yielded): the others only wait for the map to end."""
    chunks = _chunks(items, plan.chunksize, start_index)
    pool = open_pool(plan, settings)
    pending: _Pending = deque()
    window = plan.n_jobs * _in_flight_per_worker(plan)
    finished = False
    try:
        with pool.running():
            with pool.starting():
                for first, chunk in itertools.islice(chunks, window):
                    pending.append((first, len(chunk), pool.submit(first, chunk)))
            while pending:
                first, size, future = pending.popleft()
                results, *measured = _collect(pool, future, first, size, settings.cancel)
                stats.add_chunk(size, *measured)
                if on_chunk is not None:
                    on_chunk(size)
                for first_next, chunk in itertools.islice(chunks, 1):
                    # A worker that died since makes the pool refuse the chunk: name those running.
                    running = pending[0][0] if pending else first_next
                    with pool.deaths(running, first_next - 1):
                        pending.append((first_next, len(chunk), pool.submit(first_next, chunk)))
                    break
                else:
                    if winding_down is not None and len(pending) < plan.n_jobs:
                        winding_down(len(pending))
                yield results
        finished = True
    finally:
        if finished:
            pool.shutdown()
        else:
            pool.abort([future for _, _, future in pending])


def _in_flight_per_worker(plan: Plan) -> int:
    """Chunks each worker may have submitted and not yet yielded, from the plan's measured item
    and result sizes."""
    profile = plan.profile
    item_bytes = profile.get("bytes_in_per_item", 0.0) + profile.get("bytes_out_per_item", 0.0)
    return in_flight.chunks_per_worker(plan.chunksize, item_bytes)


def _chunks(items: Iterator[Any], size: int, start_index: int) -> Iterator[tuple[int, list[Any]]]:
    index = start_index
    while chunk := list(itertools.islice(items, size)):
        yield index, chunk
        index += len(chunk)


def _collect(
    pool: WorkerPool,
    future: Future[Any],
    first: int,
    size: int,
    cancel: threading.Event | None,
) -> tuple[list[Any], float, float, float, int]:
    """A chunk's results, its (wall, CPU, queued) seconds and peak bytes, or its item's error
    raised."""
    while not future.done():
        if cancel is not None and cancel.is_set():
            raise MapCancelledError(f"the map was cancelled while items {first}.. were running")
        wait_for([future], timeout=CANCEL_POLL_SECONDS)
    with pool.deaths(first, first + size - 1):
        outcome = future.result()
    if outcome[0] == "error":
        _, index, raised, remote_traceback = outcome
        raised.add_note(f"amorsize: raised by item {index} in a {pool.backend} worker")
        if remote_traceback:
            raised.add_note(f"Traceback in the worker:\n{remote_traceback}")
        raise raised
    _, results, compute, cpu, queued, peak = outcome
    return results, compute, cpu, queued, peak
