"""A serial plan, run in the caller batch after batch, weighed again between batches.

Batches start at the dry run's size and grow, so that the plan is checked early for a few
microseconds a batch; where cancellation or progress must stay prompt, until one takes about
SERIAL_BATCH_SECONDS. Items that know their length (a list) fill one list, the dry run's; others
are yielded batch by batch, so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..data.errors import MapCancelledError
from ..measure.run_stats import RunStats
from ..probes import run_queue
from ..probes.gc_pauses import CollectionTime
from ..probes.inner_jobs import inner_jobs

if TYPE_CHECKING:
    from ..data.plan import Plan

__all__ = ["Replanner", "extend", "run_serial"]

# A batch grows until it takes about this long where cancellation and progress must stay prompt:
# long enough that the loop's bookkeeping is invisible.
SERIAL_BATCH_SECONDS = 0.05
# Elsewhere batches grow this many times each: six batches for a million cheap items.
SERIAL_BATCH_GROWTH = 4

Switch = tuple["Plan", int]  # the plan for the rest, and the index of the first item left


class Replanner(Protocol):
    """Weighs a serial map again between its batches."""

    def __call__(self, done: int, batch_items: int, batch_seconds: float) -> Plan | None:
        """A plan for the rest of the map, told the items done so far and the last batch's items
        and seconds; or None to go on serially."""

    def alarm(self) -> tuple[float, float] | None:
        """(seconds per call, seconds): once a batch's calls so far took at least both, it is
        cut short and weighed at once; None where calls are too quick to read a clock after each.
        """

    def awaits_batch(self) -> bool:
        """Whether it waits for the next batch to decide: the rest may not run unweighed."""

    def keeps_batches_short(self) -> bool:
        """Whether batches should stay short anyway: it watches for CPUs to free up."""


def run_serial(
    func: Callable[[Any], Any],
    items: Iterator[Any],
    *,
    start_index: int,
    stats: RunStats,
    cancel: threading.Event | None,
    on_chunk: Callable[[int], None] | None,
    first_batch: list[Any],
    replan: Replanner | None,
    inner: int = 1,
) -> Generator[list[Any], None, Switch | None]:
    """Yield the results, each batch appended to ``first_batch`` (or to a list of its own for
    items of unknown length). Return None once every item is done, or the plan ``replan`` chose
    between two batches, with the index of the first item left. Each call's own joblib work may
    use ``inner`` threads (the CPUs: nothing else runs)."""
    run = _SerialRun(func, items, stats, cancel, on_chunk, replan, inner)
    return run.run(first_batch, start_index)


class _SerialRun:
    def __init__(
        self,
        func: Callable[[Any], Any],
        items: Iterator[Any],
        stats: RunStats,
        cancel: threading.Event | None,
        on_chunk: Callable[[int], None] | None,
        replan: Replanner | None,
        inner: int,
    ) -> None:
        self.func, self.items, self.stats, self.inner = func, items, stats, inner
        self.cancel, self.on_chunk, self.replan = cancel, on_chunk, replan
        self.prompt = (
            cancel is not None
            or on_chunk is not None
            or (replan is not None and replan.keeps_batches_short())
        )
        self.one_list = hasattr(items, "__length_hint__")
        # Any plan pays the collector's pauses alike: the re-planner is told batches without them.
        self.collections = CollectionTime()

    def run(self, first_batch: list[Any], index: int) -> Generator[list[Any], None, Switch | None]:
        results, size = first_batch, max(1, index)
        switched: Switch | None = None
        with self.collections if self.replan is not None else contextlib.nullcontext():
            while switched is None:
                if self.cancel is not None and self.cancel.is_set():
                    raise MapCancelledError(f"the map was cancelled before item {index}")
                last = self._is_last_stretch(size)
                alarm = None if last or self.replan is None else self.replan.alarm()
                done, elapsed, working = self._run_batch(results, size, index, last, alarm)
                index += done
                if done == 0 or last:
                    break
                switched = self._weigh(index, done, working)
                if switched is None:
                    if not self.one_list:
                        yield results
                        results = []
                    size = self._next_size(size, done, elapsed, alarm)
        if results or results is first_batch:
            yield results
        return switched

    def _is_last_stretch(self, size: int) -> bool:
        """Whether the rest of a list runs as one stretch: batches serve re-planning, cancelling
        and progress, and with none of them to serve (or the next batch a quarter of the rest,
        unless the re-planner awaits it) islice's few ns a call go unpaid."""
        weighing = self.replan is not None and (
            self.replan.awaits_batch()
            or SERIAL_BATCH_GROWTH * size < operator.length_hint(self.items)
        )
        return self.one_list and not self.prompt and not weighing

    def _run_batch(
        self,
        results: list[Any],
        size: int,
        index: int,
        last: bool,
        alarm: tuple[float, float] | None,
    ) -> tuple[int, float, float]:
        """Run one batch into ``results``; return its items, seconds, and seconds less pauses."""
        batch = self.items if last else itertools.islice(self.items, size)
        mark = run_queue.mark()  # releases the GIL: before the clocks
        started, cpu_before = time.perf_counter(), time.process_time()
        collected_before = self.collections.seconds
        with inner_jobs(self.inner):
            done = extend(results, self.func, batch, index, alarm)
        if done == 0:
            return 0, 0.0, 0.0
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
        self.stats.add_chunk(done, elapsed, cpu, run_queue.queued_since(mark, elapsed, cpu))
        if self.on_chunk is not None:
            self.on_chunk(done)
        return done, elapsed, elapsed - (self.collections.seconds - collected_before)

    def _weigh(self, index: int, done: int, working: float) -> Switch | None:
        if self.replan is None:
            return None
        plan = self.replan(index, done, working)
        return None if plan is None else (plan, index)

    def _next_size(
        self, size: int, done: int, elapsed: float, alarm: tuple[float, float] | None
    ) -> int:
        if alarm is not None and done < size:
            # Cut short by slow calls and not switched: the next batch is no longer, lest grown
            # it run the rest unweighed.
            return done
        if not self.prompt:
            return size * SERIAL_BATCH_GROWTH
        if elapsed < SERIAL_BATCH_SECONDS / 2:
            return size * 2
        if elapsed > SERIAL_BATCH_SECONDS * 2:
            return max(1, size // 2)
        return size


def extend(
    results: list[Any],
    func: Callable[[Any], Any],
    batch: Iterator[Any],
    first: int,
    alarm: tuple[float, float] | None = None,
) -> int:
    """Append ``func(item)`` for each item of ``batch`` to ``results``; return how many were
    added, or raise with the failing item named.

    A Python loop: cheaper than ``extend(map(...))`` and than comprehensions joined, against a
    user's plain loop (docs/decisions.md#the-serial-loop). With an ``alarm``
    (:meth:`Replanner.alarm`), only until the calls so far took at least that long.
    """
    before = len(results)
    try:
        if alarm is None:
            for item in batch:
                results.append(func(item))
        else:
            per_call, at_least = alarm
            started = time.perf_counter()
            for calls, item in enumerate(batch, 1):
                results.append(func(item))
                elapsed = time.perf_counter() - started
                if elapsed >= at_least and elapsed >= per_call * calls:
                    break
    except Exception as error:
        # What was appended before the error is kept: the failing item came next.
        error.add_note(f"amorsize: raised by item {first + len(results) - before}")
        raise
    return len(results) - before
