"""The dry run's instrument: calls the function on items in the caller and keeps what each cost.

Three things are measured apart, each by a small class: how long the calls took (alone, in
batches of cheap calls, on the GIL probe's two threads: :class:`CallTimes`), the CPU clock read
once around each stretch of steady calls (:class:`Stretches`), and what the items and results
cost to pickle (``pickling.Pickling``). :class:`Meter` calls the function, feeds all three, and
turns them into a :class:`~.profile.Profile`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..probes import run_queue
from ..probes.cpu_clocks import FunctionClock
from ..probes.gc_pauses import CollectionTime
from ..probes.procfs import resident_bytes, usable_cpus
from . import gil_probe
from .peak_memory import PEAK_MIN_SECONDS, PEAK_WATCHED_CALLS, PeakMemory
from .pickling import PICKLE_PROBES, Pickling
from .profile import Profile

__all__ = ["CHEAP_BATCH", "CHEAP_CALL_SECONDS", "MIN_RATIO_SECONDS", "Meter"]

# Calls cheaper than this are timed a batch at a time, each batch twice the last: clock readings
# around each would cost more than the call. (docs/decisions.md#cheap-calls-in-batches)
CHEAP_CALL_SECONDS = 1e-5
CHEAP_BATCH = 64
# A batch this many times slower per call than the median batch was paused (a preemption), and
# is left out of the mean. (docs/decisions.md#cheap-calls-in-batches)
PAUSED_BATCH_FACTOR = 4.0
# Below this much steady wall time the CPU clock's ratio to the wall clock is noise; where the
# process runs native threads, calls are timed at least this long. (docs/decisions.md#cpu-ratio)
MIN_RATIO_SECONDS = 1e-3
# Nor can a process use more CPU per second than this many times the CPUs it may run on: beyond,
# the ratio is the clock's artefact. (docs/decisions.md#cpu-ratio)
CPU_CLOCK_SLACK = 1.25
PairRun = tuple[int, int, float]  # a GIL probe pair's (first item's index, calls, seconds each)


@dataclass(frozen=True)
class TimedBatch:
    """Cheap calls timed together: their seconds (collections left out), how many, and the CPU
    and wall seconds the stretch clock read over them."""

    seconds: float
    calls: int
    cpu: float
    wall: float


class CallTimes:
    """How long the calls took: the first and the steady ones timed alone, batches of cheap
    calls, calls on a single thread, and the GIL probe's pairs."""

    def __init__(self) -> None:
        self.alone: list[float] = []  # the first call, then steady calls timed one at a time
        self.batches: list[TimedBatch] = []
        self.single_thread: list[float] = []
        self.pairs: list[PairRun] = []
        self._unpaused: list[TimedBatch] = []
        self._batched_mean = 0.0

    def add_batch(self, batch: TimedBatch) -> None:
        self.batches.append(batch)
        # Found once a batch, not at every reading of the mean and the ratio that use them.
        typical = _median([b.seconds / b.calls for b in self.batches])
        kept = [b for b in self.batches if b.seconds / b.calls <= PAUSED_BATCH_FACTOR * typical]
        self._unpaused = kept or list(self.batches)
        self._batched_mean = sum(b.seconds for b in self._unpaused) / sum(
            b.calls for b in self._unpaused
        )

    @property
    def unpaused_batches(self) -> list[TimedBatch]:
        """The batches no pause slowed (PAUSED_BATCH_FACTOR); all, if none is left."""
        return self._unpaused

    @property
    def first_call(self) -> float:
        return self.alone[0] if self.alone else 0.0

    @property
    def steady_calls(self) -> int:
        """Calls after the first that were timed, alone or in batches (not the pairs')."""
        return max(0, len(self.alone) - 1) + sum(batch.calls for batch in self.batches)

    @property
    def mean(self) -> float:
        """Mean seconds of a steady call: from the batches where there are some, else from the
        calls timed alone after the first (the first one if there is no other)."""
        if self.batches:
            return self._batched_mean
        steady = self.alone[1:] or self.alone
        return sum(steady) / len(steady) if steady else 0.0

    def mean_with_pairs(self, cpu_ratio: float) -> float:
        """:attr:`mean`, weighed together with the pairs' calls, each at its thread's CPU time
        over ``cpu_ratio``: they follow the steady calls, and are often more of them."""
        probed = sum(calls for _, calls, _ in self.pairs)
        if not probed:
            return self.mean
        probed_seconds = sum(calls * seconds for _, calls, seconds in self.pairs) / cpu_ratio
        return (self.mean * self.steady_calls + probed_seconds) / (self.steady_calls + probed)

    @property
    def stdev(self) -> float:
        """The standard deviation of the steady calls timed alone."""
        steady = self.alone[1:]
        if len(steady) < 2:
            return 0.0
        mean = sum(steady) / len(steady)
        return math.sqrt(sum((value - mean) ** 2 for value in steady) / (len(steady) - 1))


class Stretches:
    """CPU, wall and queued seconds of the steady calls, read once around each stretch of them:
    per call, CPU time can be below the clock's resolution. A stretch pauses while the dry run
    decides, which is not the function's time."""

    def __init__(self) -> None:
        self.cpu = self.wall = self.queued = 0.0  # of every stretch, the open one's so far
        self._clock = FunctionClock()
        self._wall_mark: float | None = None  # None between stretches
        self._queued_mark = run_queue.Mark(0.0, None)
        self._stalled = 0.0  # of the open stretch: waits for the GIL while the clock was read
        self._cpu_before = self._wall_before = self._queued_before = 0.0  # of stretches closed

    @property
    def sees_native_threads(self) -> bool:
        """Whether the process ran native threads (a pool the calls may use) when timing began."""
        return self._clock.sees_native_threads

    def open(self, *, native_threads: bool) -> None:
        """Start a stretch, unless one is open; ``native_threads`` False spares listing them."""
        if self._wall_mark is None:
            self._clock.start(native_threads=native_threads)
            self._queued_mark = run_queue.mark()
            self._stalled = 0.0
            self._wall_mark = time.perf_counter()

    def read(self) -> None:
        """Bring :attr:`cpu` and :attr:`wall` up to now."""
        assert self._wall_mark is not None
        with self.not_the_calls():
            cpu = self._clock.seconds()
            read_until = time.perf_counter()
        self.cpu = self._cpu_before + cpu
        self.wall = self._wall_before + read_until - self._wall_mark - self._stalled

    @contextlib.contextmanager
    def not_the_calls(self) -> Iterator[None]:
        """Around the dry run's own reads of /proc, which release the GIL: another of the
        caller's Python threads may then keep it, and that wait is not the function's
        (docs/decisions.md#cpu-ratio)."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            waited = time.perf_counter() - started - (time.thread_time() - cpu_started)
            if self._wall_mark is not None:
                self._stalled += max(0.0, waited)

    def close(self) -> None:
        """End the open stretch, counting its waits for a CPU (read once a stretch: the read
        releases the GIL)."""
        if self._wall_mark is not None:
            wall, cpu = self.wall - self._wall_before, self.cpu - self._cpu_before
            self.queued = self._queued_before + run_queue.queued_since(self._queued_mark, wall, cpu)
        self._cpu_before, self._wall_before, self._queued_before = self.cpu, self.wall, self.queued
        self._wall_mark = None


class Meter:
    """Calls the function on items here, one at a time, in batches or in GIL probe pairs,
    keeps every result, and measures what the calls cost."""

    def __init__(self, func: Callable[[Any], Any], start_index: int) -> None:
        self.func = func
        self.start_index = start_index
        self.results: list[Any] = []
        self.times = CallTimes()
        self.stretches = Stretches()
        self.pickling = Pickling(func)
        self.gil_readings: list[gil_probe.Reading] = []  # of each pair
        # Entered while calls are timed, which leave its pauses out (see gc_pauses).
        self.collections = CollectionTime()
        self.peaks = PeakMemory()  # of calls timed alone, where the one before was not quick
        self.usable_cpus = usable_cpus()  # read once: the ratio is asked after every call
        self.started = time.perf_counter()
        self.memory_before = self.memory_after_first = resident_bytes()

    @property
    def calls(self) -> int:
        return len(self.results)

    @property
    def mean(self) -> float:
        return self.times.mean

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def cpu_ratio(self) -> float:
        """CPU per wall second over the steady calls, waits for a CPU counted as busy (no wait
        threads could overlap); 1.0, one busy thread, where too short to tell or impossible."""
        cpu, wall, queued = self._steady_clocks()
        if wall < MIN_RATIO_SECONDS:
            return 1.0
        ratio = run_queue.cpu_ratio(cpu, wall, queued)
        return 1.0 if ratio > CPU_CLOCK_SLACK * self.usable_cpus else ratio

    def _steady_clocks(self) -> tuple[float, float, float]:
        """CPU, wall and queued seconds of the steady calls; of cheap calls, those of the
        unpaused batches: a pause is no wait of the calls', and threads would not overlap it."""
        stretches = self.stretches
        if not self.times.batches:
            return stretches.cpu, stretches.wall, stretches.queued
        kept = self.times.unpaused_batches
        wall = sum(batch.wall for batch in kept)
        share = wall / stretches.wall if stretches.wall > 0 else 0.0  # queued is read a stretch
        return sum(batch.cpu for batch in kept), wall, stretches.queued * share

    def call(self, item: Any, *, single_thread: bool = False) -> None:
        """Call the function on one item, timed alone (``single_thread``: its pools capped)."""
        index = self.start_index + self.calls
        steady = self.calls > 0 and not single_thread
        if steady:
            self._open_stretch()
        watched = not self.times.alone or (
            self.times.alone[-1] >= PEAK_MIN_SECONDS and self.peaks.watched <= PEAK_WATCHED_CALLS
        )
        if watched:
            with self.stretches.not_the_calls():
                self.peaks.start()
        started, collected = time.perf_counter(), self.collections.seconds
        try:
            result = self.func(item)
        except Exception as error:
            error.add_note(f"amorsize: raised by item {index} during the dry run")
            raise
        seconds = time.perf_counter() - started - (self.collections.seconds - collected)
        if watched:
            with self.stretches.not_the_calls():
                self.peaks.stop()
        (self.times.single_thread if single_thread else self.times.alone).append(seconds)
        if steady:
            self.stretches.read()
        elif self.calls == 0:
            self.memory_after_first = resident_bytes()
        self.results.append(result)
        self.pickling.keep([item], [result], PICKLE_PROBES)

    def call_batch(self, batch: list[Any]) -> None:
        """Time a batch of cheap calls at once: around each, the clock would cost more than them."""
        first = self.start_index + self.calls
        self._open_stretch()
        results: list[Any] = []
        started, collected = time.perf_counter(), self.collections.seconds
        try:
            for item in batch:  # as the serial runner calls them, not map()
                results.append(self.func(item))
        except Exception as error:
            error.add_note(f"amorsize: raised by item {first + len(results)} during the dry run")
            raise
        seconds = time.perf_counter() - started - (self.collections.seconds - collected)
        cpu_before, wall_before = self.stretches.cpu, self.stretches.wall
        self.stretches.read()
        self.times.add_batch(
            TimedBatch(
                seconds,
                len(batch),
                self.stretches.cpu - cpu_before,
                self.stretches.wall - wall_before,
            )
        )
        self.results.extend(results)
        self.pickling.keep(batch, results, CHEAP_BATCH)

    def call_pair(self, items: list[Any]) -> list[Any]:
        """Calls on two threads at once (gil_probe.run_pair); return the items left unrun."""
        if len(items) < 2 or not self.mean:
            for item in items:
                self.call(item)
            return []
        first = self.start_index + self.calls
        pair = gil_probe.run_pair(self.func, items, self.mean, first)
        self.gil_readings.append((pair.share, pair.crowded))
        ran = len(pair.results)
        if ran:
            self.times.pairs.append((first, ran, pair.seconds_per_call))
        self.results.extend(pair.results)
        return items[ran:]

    def close_stretch(self) -> None:
        """The steady calls pause here: what happens until the next one is not the function's."""
        self.stretches.close()

    def measure_pickling(self) -> None:
        self.pickling.measure(self.start_index)

    def profile(self) -> Profile:
        ratio = self.cpu_ratio
        mean = self.times.mean_with_pairs(ratio)
        growth = max(0, resident_bytes() - self.memory_after_first)
        single = self.times.single_thread
        pickling = self.pickling
        return Profile(
            first_call_seconds=self.times.first_call,
            seconds_per_item=mean,
            seconds_stdev=self.times.stdev,
            cpu_seconds_per_item=mean * ratio,
            single_thread_seconds=sum(single) / len(single) if single else 0.0,
            gil_share=gil_probe.lowest_share(self.gil_readings),
            bytes_in_per_item=pickling.bytes_in,
            bytes_out_per_item=pickling.bytes_out,
            pickle_seconds_in=pickling.seconds_in,
            pickle_seconds_out=pickling.seconds_out,
            function_bytes=pickling.function_bytes,
            warm_memory_bytes=max(0, self.memory_after_first - self.memory_before),
            item_memory_bytes=int(
                max(growth / max(1, self.calls - 1), pickling.bytes_out, self.peaks.bytes)
            ),
            sampled_items=self.calls,
            sample_seconds=self.elapsed,
            picklable=not pickling.not_picklable,
            not_picklable_reason=pickling.not_picklable,
        )

    def _open_stretch(self) -> None:
        # A call quicker than CHEAP_CALL_SECONDS, warm-up included, wakes no pool of threads:
        # the clock need not list them.
        alone = self.times.alone
        self.stretches.open(native_threads=not alone or alone[0] >= CHEAP_CALL_SECONDS)


def _median(values: list[float]) -> float:
    """The median, without the import of statistics a cheap map would pay (docs/decisions.md#import-cost)."""
    ordered, middle = sorted(values), len(values) // 2
    return ordered[middle] if len(values) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
