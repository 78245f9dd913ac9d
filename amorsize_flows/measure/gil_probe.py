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

# Calls this busy (CPU over wall) and this long get the two-thread GIL probe: below 0.5 they mostly
# wait and overlap anyway; below 10 µs releasing and taking back the GIL costs about as much as
# the call, and threads seldom win. (The bound was 100 µs: sha256 of 64 KB, 37 µs a call and
# GIL-free, then ran serially in 76 ms where two threads took 44 ms.)
GIL_PROBE_RATIO = 0.5
GIL_PROBE_MIN_SECONDS = 1e-5
# Each of the probe's two threads runs calls for about this long, a batch of them if they are
# short: a thread's start and the GIL's first hand-off would blur a span of one short call.
GIL_PROBE_SECONDS = 1e-3
# The probe's two threads stop taking items once this many times the calls' expected serial time
# has passed: on an input sorted by cost, a probe sized from the first calls ran 120 items in
# 150 ms (for 17 µs calls) and left the serial plan no batch to notice the rise in.
GIL_PROBE_DEADLINE = 2.0
# The probe costs about one call of lost parallelism, so it runs only where threads could beat
# processes: when pickling an item and its result costs this share of the call, or when processes
# are impossible (a daemonic worker, a function that does not pickle).
GIL_PROBE_PICKLE_SHARE = 0.1
# Whether the probe can time its calls' CPU per thread: to the nanosecond on Linux and macOS,
# in 15.6 ms ticks on Windows, longer than a probe.
THREAD_CLOCK_PRECISE = time.get_clock_info("thread_time").resolution <= 1e-6
# Below this share, calls overlapped. Where the thread clock is precise, a pair can read too
# high, never too low: calls that take turns cannot end before their CPU time has passed, but
# overlapping calls read as taking turns when other processes hold a CPU, or when a thread is
# woken late. On this VM an idle vCPU took a millisecond or more to run a thread woken for the
# GIL, a wait the kernel does not count as queued: 2 ms calls of GIL-free hashing read as taking
# turns in 2 to 4 probes of 6 after forking maps, in some runs of the suite. Nor does the host's
# steal of a vCPU show as queued. So one pair that overlapped settles it, and calls that took
# turns must do so in GIL_HELD_PAIRS pairs with free CPUs; the lowest reading stands. (Two pairs
# were not enough beside a host taking 0.3 to 0.8 s of CPU away in 4 s: GIL-free hashing read
# as held in 2 and 5 probes of 6, failing a CI run; with four, 4 runs of 6 probes each passed
# in the same hour.) A pair whose calls one thread ran all of counts as crowded: the other may
# have started late (see run_pair). Calls that hold the GIL for less than the interpreter's
# switch interval (5 ms) leave the other thread none too. Either way, calls that hold the GIL
# are read from GIL_PROBE_MAX_PAIRS pairs: a few calls more in the caller, their results kept.
# Where the clock is coarse (Windows), the calls' mean stands in for their CPU time and readings
# err both ways: overlap must then be read twice, and the highest clear reading stands.
GIL_RELEASED_SHARE = 0.5
GIL_HELD_PAIRS = 4
# A pair whose threads waited this share of their time for a CPU (runnable, none free: Linux's
# schedstat) found the CPUs crowded, and is tried again, up to this many pairs in all: other
# processes hold the CPUs. (Right after a map, Linux also ran both threads on one CPU; they are
# now kept apart, see run_pair.) On a quiet host, pairs wait under 2% of their time.
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
    """Whether knowing the GIL share of busy calls could change the plan (see GIL_PROBE_*
    above): where processes are impossible, or costly next to threads, by the pickling of each
    call or by the fresh interpreters they would have to start. Those take a tenth of a second
    and the function's imports before their first call: in Prefect's threaded engine, 1.2 to
    1.75 s for a function importing scikit-learn, whose SVC fits release the GIL and ran 1.66x
    faster on two threads than serially."""
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
