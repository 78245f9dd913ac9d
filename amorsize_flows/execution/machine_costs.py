"""The measurements behind :class:`~amorsize_flows.measure.calibration.Calibration`, through the
runner the plans use: ``python -m amorsize_flows.execution.machine_costs`` prints them as JSON.

Run in a fresh, single-threaded interpreter (``calibration.get_calibration`` starts one), so that
fork is safe to try and nothing of a caller's state skews the numbers.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal

import loky
import psutil
from loky.backend.context import get_context

from ..data.plan import Plan
from ..measure.calibration import Calibration, fingerprint
from ..probes.processes import fork_is_safe
from ..probes.procfs import usable_cpus
from .runner import run_plan

__all__ = ["measure"]

# Each pool start is measured this many times: the first in a fresh interpreter also pays the
# executor's imports, as an orchestrator's task does; the mean keeps that share, damped.
START_REPEATS = 3
# Enough trivial tasks that per-task overhead dominates the timer's resolution many times over.
DISPATCH_TASKS = 300
# Large enough that the pipe's bandwidth, not per-task latency, dominates the round trip.
PIPE_PAYLOAD_BYTES = 8 << 20
# Tasks of about this much CPU keep every worker busy while a hand-off is timed, and the runs
# stay under a second. (docs/decisions.md#calibration)
LOADED_TASK_SECONDS = 0.001
LOADED_TASKS = 400
# Threads that take the tasks while their hand-off is timed: two, where the GIL changes hands.
THREAD_TASK_WORKERS = 2
# Threads started to time what one more costs: as many as a map of waits runs on two CPUs, each
# held until all have started. (docs/decisions.md#calibration)
THREAD_START_COUNT = 64
# How long a calibration thread waits for the others to start before the measurement fails.
THREAD_START_TIMEOUT_SECONDS = 10.0


def _noop(value: object = None) -> object:
    return value


def _pid(_: object = None) -> int:
    return os.getpid()


def _time_pool_start(context_name: str, n_workers: int) -> float:
    """Start a pool, get one answer from every worker, shut it down; seconds for all of it."""
    started = time.perf_counter()
    executor = loky.ProcessPoolExecutor(max_workers=n_workers, context=get_context(context_name))
    # Twice as many short tasks as workers: every worker must be up before the last answer.
    list(executor.map(_pid, range(2 * n_workers)))
    executor.shutdown(wait=True)
    return time.perf_counter() - started


def _linear_fit(one: float, many: float, n_many: int) -> tuple[float, float]:
    per_worker = max(0.0, (many - one) / (n_many - 1)) if n_many > 1 else 0.0
    return (max(0.0, one - per_worker), per_worker)


def _start_pair(context_name: str, n_many: int) -> tuple[float, float]:
    one = statistics.mean(_time_pool_start(context_name, 1) for _ in range(START_REPEATS))
    if n_many == 1:
        return (one, 0.0)
    many = statistics.mean(_time_pool_start(context_name, n_many) for _ in range(START_REPEATS))
    return _linear_fit(one, many, n_many)


def _process_costs() -> tuple[float, float, int]:
    """Per-task overhead, pipe bandwidth and a fresh worker's memory, on one loky worker."""
    executor = loky.ProcessPoolExecutor(max_workers=1, context=get_context("loky"))
    try:
        worker_pid = executor.submit(_pid).result()
        started = time.perf_counter()
        for future in [executor.submit(_noop, index) for index in range(DISPATCH_TASKS)]:
            future.result()
        task_seconds = (time.perf_counter() - started) / DISPATCH_TASKS
        payload = b"\0" * PIPE_PAYLOAD_BYTES
        executor.submit(_noop, payload).result()  # warm the pipe buffers once
        started = time.perf_counter()
        executor.submit(_noop, payload).result()
        round_trip = max(time.perf_counter() - started - task_seconds, 1e-9)
        worker_memory = psutil.Process(worker_pid).memory_info().rss
    finally:
        executor.shutdown(wait=True)
    return task_seconds, 2 * PIPE_PAYLOAD_BYTES / round_trip, worker_memory


def _spin(iterations: int) -> int:
    total = 0
    for step in range(iterations):
        total += step
    return total


def _loaded_task_seconds(n_workers: int) -> float:
    """Per-task overhead while every worker is busy.

    Measured through the runner the plans use (its ordered in-flight window, its chunk wrapper,
    fork when it would fork), not a bare executor: with every CPU busy, each hand-off also costs
    the caller's CPU time, taken from the workers, and only the real loop shows how much.
    """
    started = time.perf_counter()
    _spin(200_000)
    iterations = int(200_000 * LOADED_TASK_SECONDS / (time.perf_counter() - started))
    start_method = "fork" if fork_is_safe() else "loky"
    work = [iterations] * LOADED_TASKS
    handoff = _extra_task_seconds("processes", n_workers, _spin, work, start_method=start_method)
    # The workers took the extra tasks side by side: the map grew by 1/n_workers of their cost.
    return handoff * n_workers


def _thread_costs() -> tuple[tuple[float, float], float]:
    def start(n_workers: int) -> float:
        # Every task waits for all the others: no thread goes idle, so the executor starts each.
        everyone = threading.Barrier(n_workers, timeout=THREAD_START_TIMEOUT_SECONDS)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n_workers) as executor:
            list(executor.map(lambda _: everyone.wait(), range(n_workers)))
        return time.perf_counter() - started

    one = statistics.mean(start(1) for _ in range(START_REPEATS))
    many = statistics.mean(start(THREAD_START_COUNT) for _ in range(START_REPEATS))
    return _linear_fit(one, many, THREAD_START_COUNT), _thread_task_seconds()


def _thread_task_seconds() -> float:
    """Per-task overhead of threads, through the runner the plans use, from empty calls: all of
    it is Python holding the GIL, serial however many threads run, and a bare executor's is half
    the runner's (docs/decisions.md#calibration)."""
    handoff = _extra_task_seconds("threads", THREAD_TASK_WORKERS, _noop, range(DISPATCH_TASKS))
    return max(handoff, 1e-9)


def _extra_task_seconds(
    backend: Literal["threads", "processes"],
    n_workers: int,
    func: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    start_method: str | None = None,
) -> float:
    """What each task beyond one per worker adds, through the runner the plans use.

    ``items`` run as one task per item and as one chunk per worker, each the faster of two runs;
    the difference, over the extra tasks, is the cost of a hand-off alone (no compute estimate,
    no start-up in it).
    """

    def fastest(chunksize: int) -> float:
        plan = Plan.fixed(backend, n_workers, chunksize, start_method=start_method)
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            for _ in run_plan(plan, func, iter(items)):
                pass
            timings.append(time.perf_counter() - started)
        return min(timings)

    one_per_item, one_per_worker = fastest(1), fastest(-(-len(items) // n_workers))
    return max(0.0, one_per_item - one_per_worker) / (len(items) - n_workers)


def measure() -> Calibration:
    """Measure this machine now, in this process (which should be fresh and single-threaded)."""
    cpus = usable_cpus()
    n_many = max(2, min(cpus, 4))
    fork_start = _start_pair("fork", n_many) if hasattr(os, "fork") else None
    loky_start = _start_pair("loky", n_many)
    task_seconds, bandwidth, worker_memory = _process_costs()
    loaded_task_seconds = max(task_seconds, _loaded_task_seconds(cpus))
    thread_start, thread_task_seconds = _thread_costs()
    return Calibration(
        fork_start=fork_start,
        loky_start=loky_start,
        process_task_seconds=task_seconds,
        process_task_loaded_seconds=loaded_task_seconds,
        thread_start=thread_start,
        thread_task_seconds=thread_task_seconds,
        pipe_bytes_per_second=bandwidth,
        worker_memory_bytes=worker_memory,
        fingerprint=fingerprint(),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


if __name__ == "__main__":
    print(json.dumps(measure().to_dict()))
