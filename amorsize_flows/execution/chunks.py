"""One chunk of a map, run where a worker runs it: a thread of the caller, or a worker process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..data.errors import MapCancelledError
from ..probes import run_queue

__all__ = ["Outcome", "run_chunk"]

# ("ok", results, wall, cpu, queued for a CPU, peak bytes) or ("error", item index, error,
# traceback text): plain tuples, which pickle cheaply back from a process.
Outcome = tuple[Any, ...]


def run_chunk(
    func: Callable[[Any], Any], first: int, chunk: list[Any], cancel: threading.Event | None = None
) -> Outcome:
    """Run ``func`` on each item of ``chunk`` (the first has index ``first``), timing the chunk
    on this thread's clocks; stop between items once ``cancel`` is set."""
    results = []
    clock = (
        time.thread_time
        if threading.current_thread() is not threading.main_thread()
        else time.process_time
    )
    mark = run_queue.mark()  # releases the GIL: before the clocks
    cpu_before, started = clock(), time.perf_counter()
    for offset, item in enumerate(chunk):
        if cancel is not None and cancel.is_set():
            return ("error", first + offset, MapCancelledError("the map was cancelled"), "")
        try:
            results.append(func(item))
        except Exception as error:
            return ("error", first + offset, error, "")
    wall, cpu = time.perf_counter() - started, clock() - cpu_before
    return ("ok", results, wall, cpu, run_queue.queued_since(mark, wall, cpu), 0)
