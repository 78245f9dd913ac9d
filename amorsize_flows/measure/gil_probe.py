"""The GIL probe: do busy calls hold the GIL (pure Python) or release it (hashing, compression,
most of numpy)? Threads overlap only the waits of the first kind, and all of the second.

Two threads run calls at once; how long they took together, against the calls' own CPU time,
tells. The calls are the map's own items: their results are kept, as the dry run's are.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..probes.procfs import current_cpu
from ..probes.run_queue import queued_seconds

__all__ = [
    "GIL_PROBE_MAX_PAIRS",
    "GIL_PROBE_RATIO",
    "Pair",
    "Reading",
    "answered",
    "calls_per_thread",
    "can_matter",
    "lowest_share",
    "run_pair",
]

# Calls this busy (CPU over wall) and this long are probed: below, they mostly wait, or the GIL's
# hand-off costs about a call. (docs/decisions.md#the-gil-probe)
GIL_PROBE_RATIO = 0.5
GIL_PROBE_MIN_SECONDS = 1e-5
# Each of the two threads runs calls for about this long: one short call's span is blurred by a
# thread's start.
GIL_PROBE_SECONDS = 1e-3
# The threads stop taking items at this many times the calls' expected time (an input sorted by
# cost), and leave the rest to the serial plan. (docs/decisions.md#the-gil-probe)
GIL_PROBE_DEADLINE = 2.0
# The probe costs about a call of lost parallelism: it runs where threads could beat processes,
# among them where pickling costs this share of a call.
GIL_PROBE_PICKLE_SHARE = 0.1
# Whether calls' CPU can be timed per thread: to the nanosecond on Linux and macOS, in 15.6 ms
# ticks on Windows, longer than a probe.
THREAD_CLOCK_PRECISE = time.get_clock_info("thread_time").resolution <= 1e-6
# Below this share calls overlapped, and one such pair settles it (a pair can read too high, never
# too low); taking turns must be read in GIL_HELD_PAIRS pairs with free CPUs, and the lowest
# reading stands. With a coarse clock, overlap must be read twice and the highest clear reading
# stands. (docs/decisions.md#the-gil-probe)
GIL_RELEASED_SHARE = 0.5
GIL_HELD_PAIRS = 4
# A pair whose threads queued for a CPU this share of their time found the CPUs crowded, and is
# tried again, up to GIL_PROBE_MAX_PAIRS pairs in all.
GIL_PROBE_CROWDED_SHARE = 0.1
GIL_PROBE_MAX_PAIRS = 4

Reading = tuple[float, bool]  # a pair's (share, crowded)


@dataclass(frozen=True)
class Pair:
    """What a pair ran, and what it read."""

    results: list[Any]  # of the items it ran: the first of those it was given
    share: float  # of a call's time, holding the GIL: 0 when calls overlapped, 1 took turns
    crowded: bool  # no free CPU for a share of the time, or one thread ran every call
    seconds_per_call: float  # on the threads' own CPU clocks (the mean given, where coarse)


def can_matter(
    cpu_ratio: float,
    seconds_per_call: float,
    pickling_seconds: float,
    *,
    picklable: bool,
    processes_possible: bool,
    fork_possible: bool,
) -> bool:
    """Whether knowing the GIL share of busy calls could change the plan: where processes are
    impossible, or costly next to threads, by the pickling of each call or by the fresh
    interpreters they would start (docs/decisions.md#the-gil-probe)."""
    if cpu_ratio < GIL_PROBE_RATIO or seconds_per_call < GIL_PROBE_MIN_SECONDS:
        return False
    if not processes_possible or not picklable or not fork_possible:
        return True
    return pickling_seconds >= GIL_PROBE_PICKLE_SHARE * seconds_per_call


def calls_per_thread(seconds_per_call: float) -> int:
    """Calls each thread of a pair runs: enough to take about GIL_PROBE_SECONDS."""
    return max(1, math.ceil(GIL_PROBE_SECONDS / seconds_per_call))


def lowest_share(readings: list[Reading]) -> float | None:
    """The lowest share the pairs read (see GIL_RELEASED_SHARE); with a coarse thread clock the
    highest, leaving out pairs that found the CPUs crowded unless every pair did. None before
    any pair ran."""
    if not readings:
        return None
    shares = [share for share, _ in readings]
    if THREAD_CLOCK_PRECISE:
        return min(shares)
    clear = [share for share, crowded in readings if not crowded]
    return max(clear or shares)


def answered(readings: list[Reading]) -> bool:
    """Whether the probe has its answer: calls overlapped in a pair (two, with a coarse clock),
    or took turns in GIL_HELD_PAIRS pairs that had free CPUs."""
    if not readings:
        return True  # too few items left for a pair
    overlapped = sum(share < GIL_RELEASED_SHARE for share, _ in readings)
    took_turns = sum(share >= GIL_RELEASED_SHARE and not crowded for share, crowded in readings)
    return overlapped >= (1 if THREAD_CLOCK_PRECISE else 2) or took_turns >= GIL_HELD_PAIRS


def run_pair(
    func: Callable[[Any], Any], items: list[Any], seconds_per_call: float, first_index: int
) -> Pair:
    """Run ``items`` (two or more) on two threads at once, each taking the next item in turn,
    and read from how long they took together the share of a call that holds the GIL. Calls
    that grew dearer than ``seconds_per_call`` (an input sorted by size) stop at a deadline,
    and the items not taken are left to the caller. ``first_index`` is ``items[0]``'s index.

    Raises:
        Exception: whatever ``func`` raised first, with a note naming the item.
    """
    return _PairRun(func, items, GIL_PROBE_DEADLINE * len(items) * seconds_per_call).run(
        seconds_per_call, first_index
    )


class _PairRun:
    """Two threads taking the next item in turn, each keeping its own clocks."""

    def __init__(self, func: Callable[[Any], Any], items: list[Any], budget: float) -> None:
        self.func, self.items, self.budget = func, items, budget
        self.results: list[Any] = [None] * len(items)
        self.failures: dict[int, BaseException] = {}
        self.taken = itertools.count()
        # Set when the first item is taken, not before: on a loaded host a thread's start can
        # take longer than the whole budget.
        self.first_taken = math.inf
        self.deadline = math.inf
        self.cpu_seconds: list[float] = []  # of each thread: one waiting for the GIL uses none
        self.queued: list[float] = []  # of each thread: runnable, but no CPU was free
        self.calls: list[int] = []  # of each thread

    def run(self, seconds_per_call: float, first_index: int) -> Pair:
        # One thread started, the other here at once, each kept on its own CPU: the span of
        # both tells (docs/decisions.md#the-gil-probe). A new thread's count of waits for a CPU
        # starts at zero; this one's is read before it starts the other.
        queued_before = queued_seconds()
        here, elsewhere = _cpus_apart()
        with _this_thread_on(here):
            other = threading.Thread(target=self._thread, args=(0.0, elsewhere))
            other.start()
            self._thread(queued_before)
            other.join()
        span = time.perf_counter() - self.first_taken
        if self.failures:
            position = min(self.failures)
            error = self.failures[position]
            error.add_note(f"amorsize: raised by item {first_index + position} during the dry run")
            raise error
        ran = min(next(self.taken), len(self.items))
        # The calls' own CPU time is what they would take one after the other; where the thread
        # clock is coarse (Windows), the earlier calls' mean stands in.
        serial = sum(self.cpu_seconds) if THREAD_CLOCK_PRECISE else ran * seconds_per_call
        share = min(1.0, max(0.0, 2 * span / serial - 1.0)) if serial else 1.0
        # Calls take turns all the same where the threads found no free CPU, or one thread ran
        # them all (the other may have started late).
        crowded = sum(self.queued) >= GIL_PROBE_CROWDED_SHARE * 2 * span or 0 in self.calls
        return Pair(self.results[:ran], share, crowded, serial / ran if ran else 0.0)

    def _thread(self, queued_before: float, cpus: set[int] | None = None) -> None:
        started = time.thread_time()
        try:
            if cpus:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, cpus)  # the probe's own thread, gone after
            self.calls.append(self._take_and_call())
        finally:
            self.cpu_seconds.append(time.thread_time() - started)
            self.queued.append(queued_seconds() - queued_before)

    def _take_and_call(self) -> int:
        # next() on a count is atomic under the GIL, and a position taken is run: the items
        # run form a prefix of ``items``.
        done = 0
        while not self.failures and time.perf_counter() <= self.deadline:
            position = next(self.taken)
            if position >= len(self.items):
                break
            if position == 0:
                self.first_taken = time.perf_counter()
                self.deadline = self.first_taken + self.budget
            try:
                self.results[position] = self.func(self.items[position])
            except BaseException as error:
                self.failures[position] = error
                break
            done += 1
        return done


def _cpus_apart() -> tuple[set[int] | None, set[int] | None]:
    """The CPU this thread runs on now, and the others it may run on; (None, None) where that
    is unknown or there is no other."""
    current = current_cpu() if hasattr(os, "sched_getaffinity") else None
    if current is None:
        return None, None
    others = os.sched_getaffinity(0) - {current}
    return ({current}, others) if others else (None, None)


@contextlib.contextmanager
def _this_thread_on(cpus: set[int] | None) -> Iterator[None]:
    """Keep the calling thread on ``cpus`` (Linux applies affinity per thread), then give it
    back the CPUs it had."""
    if not cpus:
        yield
        return
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cpus)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)
