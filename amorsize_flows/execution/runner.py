r"""Run a plan: serial, threads or processes, results in input order, nothing left behind.

::

    run_plan(plan, func, items)
      serial     -> serial.run_serial: batches in the caller; between two, the re-planner may
                    hand the rest to a parallel plan, and the map goes on below
      threads    -> pooled.run_pooled -> pools.ThreadWorkers            (concurrent.futures)
      processes  -> pooled.run_pooled -> process_pool.ProcessWorkers    (loky: fork, or fresh)
                                           \-> worker_process: init_worker, run_chunk_in_worker

The pooled loop keeps a few chunks per worker in flight, yields their results in input order,
and on every way out (an item's error, a dead worker, a cancel, the caller closing the iterator)
shuts the pool down or kills its workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..measure.run_stats import RunStats
from ..probes.procfs import usable_cpus
from .serial import Replanner, run_serial

if TYPE_CHECKING:
    from ..data.plan import Plan

__all__ = ["ProgressCallback", "Replanner", "run_plan"]

ProgressCallback = Callable[[int, "int | None"], None]


def run_plan(
    plan: Plan,
    func: Callable[[Any], Any],
    items: Iterator[Any],
    *,
    start_index: int = 0,
    stats: RunStats | None = None,
    cancel: threading.Event | None = None,
    on_chunk: Callable[[int], None] | None = None,
    cpus: int | None = None,
    into: list[Any] | None = None,
    replan: Replanner | None = None,
    cap_loaded_pools: bool = True,
    winding_down: Callable[[int], None] | None = None,
) -> Iterator[list[Any]]:
    """Yield the results of ``func(item)`` in order, a list per chunk, as ``plan`` says.

    Args:
        plan: the backend, workers and chunk size to use.
        func: the function of one item.
        items: the items, consumed lazily.
        start_index: the index of the first item, for error notes.
        stats: filled in with what the map measured.
        cancel: when set, the map stops, its workers are killed, and MapCancelledError is raised.
        on_chunk: called with the number of items of every finished chunk (progress).
        cpus: the CPUs this worker may use; BLAS/OpenMP threads are capped to each worker's share.
        into: for a serial plan, a list (the dry run's results) that the first batch extends and
            is yielded as, instead of a new list: a long cheap map's results are not copied.
        replan: for a serial plan, asked between batches whether the rest should run in
            parallel after all (calls turned out slower than the dry run measured).
        cap_loaded_pools: whether BLAS/OpenMP pools the caller has already loaded are capped
            in the caller during a threads map (pools loaded later always are). threadpoolctl
            scans the loaded libraries to do it (about 1 ms), so False where the function was
            seen not to run threads of its own. Process workers are always capped: in the
            caller while they fork (they inherit the cap, and their pools stay asleep), or in a
            fresh interpreter by itself.
        winding_down: for a parallel plan, told how many workers can still be busy once the
            last chunk is submitted and fewer chunks than workers are left (the lease lets the
            others' slots go).

    Raises:
        WorkerDiedError: a worker process died.
        MapCancelledError: ``cancel`` was set.
        Exception: whatever ``func`` raised, with a note naming the item.
    """
    stats = stats if stats is not None else RunStats()
    stats.started_at = time.perf_counter()
    try:
        if plan.backend == "serial":
            switched = yield from run_serial(
                func,
                items,
                start_index=start_index,
                stats=stats,
                cancel=cancel,
                on_chunk=on_chunk,
                first_batch=[] if into is None else into,
                replan=replan,
                inner=cpus or usable_cpus(),
            )
            if switched is None:
                return
            plan, start_index = switched
            # The serial plan's limits may have been an upper bound; the new plan's were all read.
            cpus = plan.limits.get("cpus", cpus)
            stats.workers_start()
        from .pooled import PoolSettings, run_pooled  # a serial map never loads the pools

        share = max(1, (cpus or usable_cpus()) // plan.n_jobs)
        settings = PoolSettings(func, cancel, share, cap_loaded_pools)
        yield from run_pooled(
            plan,
            items,
            settings,
            start_index=start_index,
            stats=stats,
            on_chunk=on_chunk,
            winding_down=winding_down,
        )
    finally:
        stats.finished_at = time.perf_counter()
