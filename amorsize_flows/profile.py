"""The dry run: a few items run here, in the caller, and what they cost.

The sampled items are real work: their results are kept and returned with the rest, so no item is
computed twice and the side effects of a sampled item happen once. The dry run stops as soon as
the estimate is good enough, and never takes more than a small share of the time the map could
take at best.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import os
import pickle
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field, fields
from typing import Any

import cloudpickle
import psutil
from threadpoolctl import threadpool_limits

from . import gil_probe, run_queue
from .cpu_clocks import FunctionClock
from .gc_pauses import CollectionTime
from .run_queue import cpu_ratio
from .trend import Batch

__all__ = ["Parallelism", "Profile", "Sample", "function_identity", "sample"]

log = logging.getLogger(__name__)

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

Parallelism = tuple[int, int]  # (CPUs, threads) a map could use at most

# The dry run may cost this share of the best time the map could take (its serial time divided by
# the most parallelism it could get): at 2% the dry run's items, run serially, delay the whole map
# by well under the 15% margin the project promises against the best fixed configuration.
SAMPLE_FRACTION = 0.02
# Steady-state calls needed before the fraction rule may stop the dry run: one sees the warm-up
# apart from the steady state; variation it cannot see is assumed by the model (UNSEEN_VARIATION).
MIN_STEADY_CALLS = 1
# With this many calls and a standard error under STABLE_ERROR of the mean, more calls would not
# change the plan; cheap functions stop here after a few milliseconds.
STABLE_CALLS = 10
STABLE_ERROR = 0.05
# Below this much sampling, timer noise and cache effects dominate a cheap function's mean.
MIN_SAMPLE_SECONDS = 0.002
# Whatever the item count, a dry run longer than this buys no better plan.
MAX_SAMPLE_SECONDS = 1.0
# Above this CPU seconds per wall second, a call runs threads of its own (BLAS, OpenMP). One busy
# thread measures 1.0 give or take 0.2 on millisecond-long dry runs (clock granularity).
INTERNAL_THREADS_RATIO = 1.5
# Calls timed on a single thread when the function runs threads of its own: two show whether the
# first was an outlier, and cost little next to the map they decide.
SINGLE_THREAD_CALLS = 2
# The process CPU clock advances in coarse steps on some kernels: below this much steady wall time
# its ratio to the wall clock is noise (0.3 to 3 measured on microsecond calls). Where the process
# runs native threads (a BLAS or OpenMP pool), calls that are not cheap are timed at least this
# long: 300x300 numpy products on two OpenBLAS threads (0.45 ms each), stopped after two steady
# calls, were read as one busy thread, whose pool a threads plan would then leave uncapped.
MIN_RATIO_SECONDS = 1e-3
# Nor can a process use more CPU seconds per second than the CPUs it may run on: a ratio beyond
# this many times their count is the clock's artefact. Once, on this 2-CPU VM, one 4.2 ms call of
# pure Python read 21 ms of CPU (5.0 CPUs' worth of threads of its own), and 400 such calls ran
# serially where two processes take half the time.
CPU_CLOCK_SLACK = 1.25
# Calls cheaper than this are timed a batch at a time once the first few were timed alone: two
# clock readings around each would cost more than the call and double the dry run's cost. Each
# batch is twice the last, so that the dry run's share of the map's time goes into calls, whose
# results are kept, more than into the bookkeeping around each batch (20 to 30 µs in a fresh
# process: three to four times what 64 calls of 0.1 µs take).
CHEAP_CALL_SECONDS = 1e-5
CHEAP_BATCH = 64
# A batch this many times slower per call than the median batch was interrupted (a preemption),
# not slowed by its own 64 calls, which average out their variation: left out of the mean. One
# such 1 ms pause in a 0.4 ms dry run read a 0.12 µs call as 0.6 µs and sent 300k cheap calls to
# processes. Leaving out a real rare slow call errs toward serial, the safe side for cheap calls.
# Garbage collections are left out of every timing (gc_pauses): with two or three batches, one
# landing in the middle one is the median (100k dicts, after numpy's import: 0.5 µs calls read
# as 7 µs, sent to processes at an estimated 1.80x, achieved 0.43x).
PAUSED_BATCH_FACTOR = 4.0
# Inputs and outputs pickled to measure their transfer cost: sizes vary less than durations.
# They are pickled as one list, as a chunk travels: alone, a small item's pickling is mostly the
# fixed cost of a pickle (an int: 1.5 µs alone, 0.05 µs in a list of 64), which would make
# processes look hopeless for cheap calls that large chunks serve well. Cheap calls, run in
# batches, contribute a batch's worth.
PICKLE_PROBES = 8
QUICK_PICKLE_SECONDS = 1e-3
# An iterator of unknown length is read ahead to learn its length: whether the map pays for workers,
# and which chunk size splits it evenly (unknown, the last chunk may run alone). At most this many
# items, this many bytes (pickled), or this many seconds of reading: the items are read by the
# caller either way, only earlier. (Stopping once 2 s of work were seen left a generator of 2000
# x 1 ms calls of unknown length, planned in chunks of 14: 1.18 s, against 1.08 s in chunks of 1000.)
LOOKAHEAD_MAX_ITEMS = 100_000
LOOKAHEAD_MAX_BYTES = 256 << 20
LOOKAHEAD_MAX_SECONDS = 0.05
# Nor more than this share of the memory the map may use: in a small container, items held to
# learn a length must not crowd out the workers the model plans into that memory.
LOOKAHEAD_MEMORY_SHARE = 0.05


@dataclass(frozen=True)
class Profile:
    """What one call of the function costs, measured in the caller.

    Attributes:
        first_call_seconds: the first call, warm-up (lazy imports, a model loaded) included.
        seconds_per_item: mean wall seconds of a call after the first, the GIL probe's too.
        seconds_stdev: their standard deviation (skew makes a slow tail).
        cpu_seconds_per_item: mean CPU seconds of the process per call, a wait for a CPU held
            by other processes counted as CPU time (threads could not overlap it); far below
            the wall time means waiting (I/O), far above means threads of its own (BLAS).
        single_thread_seconds: for such a function, a call with its threads capped to one
            (0 when not measured).
        gil_share: the share of a busy call that holds the GIL, measured by two calls at once on
            two threads (0: threads overlap fully, 1: not at all); None when not measured.
        bytes_in_per_item, bytes_out_per_item: pickled sizes of an input and of a result.
        pickle_seconds_in, pickle_seconds_out: seconds to pickle and unpickle one of each.
        function_bytes: the pickled size of the function (cloudpickle).
        warm_memory_bytes: memory the first call kept (a loaded model, caches).
        item_memory_bytes: memory one call needs, at least its result's size.
        sampled_items: calls made; sample_seconds: wall seconds of the whole dry run.
        picklable: whether the function, inputs and results can go to another process.
        not_picklable_reason: why not, when they cannot.
    """

    first_call_seconds: float
    seconds_per_item: float
    seconds_stdev: float = 0.0
    cpu_seconds_per_item: float = 0.0
    single_thread_seconds: float = 0.0
    gil_share: float | None = None
    bytes_in_per_item: float = 0.0
    bytes_out_per_item: float = 0.0
    pickle_seconds_in: float = 0.0
    pickle_seconds_out: float = 0.0
    function_bytes: int = 0
    warm_memory_bytes: int = 0
    item_memory_bytes: int = 0
    sampled_items: int = 0
    sample_seconds: float = 0.0
    picklable: bool = True
    not_picklable_reason: str = ""

    @property
    def warmup_seconds(self) -> float:
        """What the first call cost beyond a steady one: paid again by every fresh worker."""
        return max(0.0, self.first_call_seconds - self.seconds_per_item)

    @property
    def cpu_ratio(self) -> float:
        """CPU seconds per wall second of a call (0 = all waiting, 1 = one busy thread)."""
        return self.cpu_seconds_per_item / self.seconds_per_item if self.seconds_per_item else 1.0

    def lacks_gil_share(self, *, processes_possible: bool, fork_possible: bool) -> bool:
        """Whether the GIL share, not measured, could change a plan made from this profile."""
        return self.gil_share is None and gil_probe.can_matter(
            self.cpu_ratio,
            self.seconds_per_item,
            self.pickle_seconds_in + self.pickle_seconds_out,
            picklable=self.picklable,
            processes_possible=processes_possible,
            fork_possible=fork_possible,
        )

    @property
    def busy(self) -> bool:
        """Whether a call spends most of its time on the CPU rather than waiting (see gil_probe)."""
        return self.cpu_ratio >= gil_probe.GIL_PROBE_RATIO

    @property
    def runs_own_threads(self) -> bool:
        """Whether a call keeps more than one CPU busy: threads of its own (BLAS, OpenMP)."""
        return self.cpu_ratio > INTERNAL_THREADS_RATIO

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        # Every field is a flat, immutable value: asdict's recursive deep copy is not needed, and
        # this runs before every map.
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        known = {f.name: f for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        return cls(**values)


@dataclass
class Sample:
    """The outcome of a dry run: the profile, the results so far, and what is left to map."""

    profile: Profile
    results: list[Any]
    rest: Iterator[Any]
    n_items: int | None
    n_items_lower_bound: int
    _meter: _Meter = field(repr=False)

    @property
    def steady_calls(self) -> int:
        """Calls after the first that were timed, alone or in batches (the GIL probe's are not)."""
        meter = self._meter
        return max(0, len(meter.wall) - 1) + sum(calls for _, calls in meter.batches)

    def batches(self) -> list[Batch]:
        """The dry run's calls as consecutive batches along the input, each at its cost per call:
        those before the GIL probe at their mean, then the probe's at what they took on their
        threads' clocks. A serial plan weighs its own batches after these (trend): on an input
        sorted by cost, the probe ran 20 to 40 items of a rising cost, and counted at the first
        calls' cost they hid the rise from the line."""
        start, done = self._meter.start_index, self._meter.start_index + len(self.results)
        pairs = self._meter.pairs
        if not pairs or pairs[-1][0] + pairs[-1][1] != done:  # no probe, or calls ran after it
            return [Batch(start, done - start, self.profile.seconds_per_item)]
        first = pairs[0][0]
        probed = sum(calls * seconds for _, calls, seconds in pairs) / (done - first)
        return [
            Batch(start, first - start, self._meter.mean),
            Batch(first, done - first, probed),
        ]

    def extend(self, calls: int) -> int:
        """Run up to ``calls`` more items here, timed one at a time, keep their results and
        measure the profile again (pickling and the GIL share stay as measured). Return how many
        ran: fewer when the items ran out, and then the item count is known."""
        ran = 0
        with self._meter.collections:
            for item in itertools.islice(self.rest, calls):
                self._meter.call(item)
                ran += 1
        self._meter.close_stretch()
        if ran < calls and self.n_items is None:
            self.n_items = self.n_items_lower_bound = len(self.results)
        self.profile = self._meter.profile()
        return ran


def function_identity(func: Callable[..., Any]) -> tuple[str, str]:
    """``module:qualname`` of a callable and a digest of its code, stable across processes.

    The digest changes when the function's code or constants change, so that a record of a
    previous run is not trusted for a function that has been edited since.
    """
    target: Any = func
    parts: list[bytes] = []
    while isinstance(target, functools.partial):
        parts.append(_stable_bytes((target.args, sorted(target.keywords.items()))))
        target = target.func
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    code = getattr(target, "__code__", None) or getattr(type(target).__call__, "__code__", None)
    if code is not None:
        parts.append(_code_bytes(code))
    parts.append(f"{module}:{name}".encode())
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return f"{module}:{name}", digest


def _code_bytes(code: Any) -> bytes:
    pieces = [code.co_code]
    for const in code.co_consts:
        pieces.append(_code_bytes(const) if hasattr(const, "co_code") else repr(const).encode())
    return b"\0".join(pieces)


def _stable_bytes(value: object) -> bytes:
    try:
        return pickle.dumps(value, protocol=4)
    except Exception:  # arguments that do not pickle are told apart by their type only
        return repr(type(value)).encode()


def _spent_its_share(
    elapsed: float, mean: float, n_items: int | None, parallelism: Parallelism, cpu_ratio: float
) -> bool:
    """True once the dry run has cost its share of the map's best possible time."""
    if n_items is None:
        return False
    cpus, max_threads = parallelism
    # CPU work runs on `cpus` workers at most; work that waits overlaps on many threads.
    best = max(cpus, min(max_threads, 1.0 / max(cpu_ratio, 1.0 / max_threads)))
    return elapsed >= SAMPLE_FRACTION * mean * n_items / best


def _probe_pickle(value: object) -> tuple[int, float]:
    """Bytes of ``value`` pickled, and seconds to pickle and unpickle it.

    The first pickle in a process pays one-time costs (64 ints: 10 µs, then 2 µs); a quick one is
    timed again and the faster kept.
    """
    size, seconds = _time_pickle(value)
    if seconds < QUICK_PICKLE_SECONDS:
        seconds = min(seconds, _time_pickle(value)[1])
    return size, seconds


def _time_pickle(value: object) -> tuple[int, float]:
    started = time.perf_counter()
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(data)
    return len(data), time.perf_counter() - started


def sample(
    func: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    sample_size: int | None = None,
    parallelism: Parallelism = (1, 1),
    processes_possible: bool = True,
    fork_possible: bool = True,
    memory_bytes: int | None = None,
    start_index: int = 0,
) -> Sample:
    """Run ``func`` on the first few items here and measure what a call costs.

    Args:
        func: the function of one item.
        items: a sequence, or any iterable (consumed lazily and chained back into ``rest``).
        sample_size: steady-state calls to make after the first; adaptive when None.
        parallelism: (CPUs, threads) the map could use at most; bounds the dry run's share.
        processes_possible: False inside a daemonic process, where only threads can help.
        fork_possible: False where processes would start as fresh interpreters (the caller runs
            threads, and a fork could deadlock): threads then have far less to beat.
        memory_bytes: the memory the map may use; bounds the items read ahead of an iterator.
        start_index: the index of the first item, for error notes.

    Raises:
        Exception: whatever ``func`` raises, with a note naming the item.
    """
    n_items = len(items) if isinstance(items, Sized) else None
    iterator = iter(items)
    meter = _Meter(func, start_index)
    with meter.collections:
        while not _enough(meter, n_items, sample_size, parallelism):
            cheap = meter.calls > PICKLE_PROBES and meter.mean < CHEAP_CALL_SECONDS
            size = CHEAP_BATCH << len(meter.batches) if cheap and sample_size is None else 1
            batch = list(itertools.islice(iterator, size))
            if not batch:
                n_items = meter.calls
                break
            if len(batch) == 1:
                meter.call(batch[0])
            else:
                meter.call_batch(batch)
    meter.close_stretch()
    meter.measure_pickling()
    if meter.cpu_ratio > INTERNAL_THREADS_RATIO:
        # How fast is one call on one thread? Workers get a share of the CPUs each, so this is
        # what a call costs in a parallel plan: measured here, not guessed from the CPU ratio.
        with threadpool_limits(1):
            for item in itertools.islice(iterator, SINGLE_THREAD_CALLS):
                meter.call(item, single_thread=True)
    elif gil_probe.can_matter(
        meter.cpu_ratio,
        meter.mean,
        meter.pickle_in + meter.pickle_out,
        picklable=not meter.not_picklable,
        processes_possible=processes_possible,
        fork_possible=fork_possible,
    ):
        # Busy calls: does the function hold the GIL (pure Python) or release it (hashing,
        # compression, most of numpy)? Two calls (or batches) at once on two threads tell, in
        # as many pairs as gil_probe.GIL_RELEASED_SHARE says.
        per_thread = gil_probe.calls_per_thread(meter.mean)
        for _ in range(gil_probe.GIL_PROBE_MAX_PAIRS):
            unrun = meter.call_pair(list(itertools.islice(iterator, 2 * per_thread)))
            iterator = itertools.chain(unrun, iterator)
            if gil_probe.answered(meter.gil_readings):
                break
    if n_items is not None and meter.calls >= n_items:
        n_items = meter.calls
    profile = meter.profile()
    rest, n_items, lower_bound = _look_ahead(iterator, n_items, meter.calls, profile, memory_bytes)
    log.debug(
        "dry run: %d calls in %.4fs, %.6fs per call",
        meter.calls,
        profile.sample_seconds,
        profile.seconds_per_item,
    )
    return Sample(profile, meter.results, rest, n_items, lower_bound, meter)


class _Meter:
    """Calls the function on items one at a time and keeps what each call cost."""

    def __init__(self, func: Callable[[Any], Any], start_index: int) -> None:
        self.func = func
        self.start_index = start_index
        self.results: list[Any] = []
        self.wall: list[float] = []  # calls timed one at a time
        self.batches: list[tuple[float, int]] = []  # (seconds, calls) of cheap calls timed together
        self.batch_clocks: list[tuple[float, float]] = []  # (CPU, wall) seconds of each batch
        # The batches no pause slowed (_unpaused), and their mean: updated as each batch ends.
        self._unpaused_batches: list[int] = []
        self._batched_mean = 0.0
        self.single_thread: list[float] = []
        # Entered while calls are timed, which leave its pauses out (see gc_pauses).
        self.collections = CollectionTime()
        self.gil_readings: list[gil_probe.Reading] = []  # of each pair
        # (first item's index, calls, seconds per call) of each pair that ran calls.
        self.pairs: list[tuple[int, int, float]] = []
        self.cpu_steady = self.wall_steady = 0.0
        self.queued_steady = 0.0  # of the closed stretches' wall time: waiting for a CPU
        self.usable_cpus = _usable_cpus()  # read once: the ratio is asked after every call
        # Per item, from the probed inputs and results pickled as lists (measure_pickling).
        self.bytes_in = self.bytes_out = self.pickle_in = self.pickle_out = 0.0
        self.probing = True  # until measure_pickling has pickled the items probed
        self.probed_items: list[Any] = []
        self.probed_results: list[Any] = []
        self.function_bytes, self.not_picklable = _pickled_function_size(func)
        self.started = time.perf_counter()
        self.memory_before = self.memory_after_first = _resident_bytes()
        # CPU and wall clocks read once around a stretch of steady calls, not around each: per
        # call, CPU time can be below the clock's resolution. None between stretches.
        self._clock = FunctionClock()
        self._wall_mark: float | None = None
        self._queued_mark = run_queue.Mark(0.0, None)
        self._stalled = 0.0  # of the open stretch: waits for the GIL while the clock was read
        self._cpu_before = self._wall_before = self._queued_before = 0.0  # of stretches closed

    @property
    def calls(self) -> int:
        return len(self.results)

    @property
    def gil_share(self) -> float | None:
        """The GIL share the probe's pairs read (gil_probe.lowest_share); None before any."""
        return gil_probe.lowest_share(self.gil_readings)

    @property
    def mean(self) -> float:
        """Mean seconds of a steady call: from the batches of cheap calls when there are some (a
        clock reading around each call would cost more than the call), else from the calls timed
        one at a time after the first (the first one if there is no other)."""
        if self.batches:
            return self._batched_mean
        steady = self.wall[1:] or self.wall
        return sum(steady) / len(steady) if steady else 0.0

    @property
    def mean_with_probe(self) -> float:
        """:attr:`mean`, weighed together with the GIL probe's calls, each at its thread's CPU
        time over the CPU ratio. Those are the calls right after the steady ones, often dozens:
        on an input sorted by cost, the probe ran 8 calls 150 times dearer than the first ones
        and the profile, from the first alone, still said 24.5 µs a call."""
        probed = sum(calls for _, calls, _ in self.pairs)
        if not probed:
            return self.mean
        steady = max(0, len(self.wall) - 1) + sum(calls for _, calls in self.batches)
        probed_seconds = sum(calls * seconds for _, calls, seconds in self.pairs) / self.cpu_ratio
        return (self.mean * steady + probed_seconds) / (steady + probed)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def sees_native_threads(self) -> bool:
        """Whether the process ran native threads (a pool the calls may use) when timing began."""
        return self._clock.sees_native_threads

    @property
    def cpu_ratio(self) -> float:
        """CPU per wall second over the steady calls (per call, CPU time is below resolution),
        the time spent waiting for a CPU counted as busy: no wait threads could overlap."""
        cpu, wall, queued = self._steady_clocks()
        if wall < MIN_RATIO_SECONDS:
            return 1.0  # too short to tell: assume one busy thread, the common case
        ratio = cpu_ratio(cpu, wall, queued)
        if ratio > CPU_CLOCK_SLACK * self.usable_cpus:
            return 1.0  # impossible: assume one busy thread, as above
        return ratio

    def _steady_clocks(self) -> tuple[float, float, float]:
        """CPU, wall and queued seconds of the steady calls; of cheap calls, those of the batches
        their mean counts (_unpaused). A batch stalled by a pause (the host's, a collection's)
        is left out of both: the pause is no wait of the calls', and threads would not overlap
        it. (Counted in the ratio alone, one 20 ms pause among calls under a microsecond read
        them as 97% waiting.)"""
        if not self.batches:
            return self.cpu_steady, self.wall_steady, self.queued_steady
        kept = [self.batch_clocks[index] for index in self._unpaused_batches]
        wall = sum(seconds for _, seconds in kept)
        # Waits for a CPU are read once a stretch: shared out by wall time.
        share = wall / self.wall_steady if self.wall_steady > 0 else 0.0
        return sum(cpu for cpu, _ in kept), wall, self.queued_steady * share

    def call(self, item: Any, *, single_thread: bool = False) -> None:
        index = self.start_index + self.calls
        steady = self.calls > 0 and not single_thread
        if steady:
            self._open_stretch()
        started, collected = time.perf_counter(), self.collections.seconds
        try:
            result = self.func(item)
        except Exception as error:
            error.add_note(f"amorsize: raised by item {index} during the dry run")
            raise
        seconds = time.perf_counter() - started - (self.collections.seconds - collected)
        if single_thread:
            self.single_thread.append(seconds)
        else:
            self.wall.append(seconds)
        if steady:
            self._read_stretch()
        elif self.calls == 0:
            self.memory_after_first = _resident_bytes()
        self.results.append(result)
        if self.probing and len(self.probed_items) < PICKLE_PROBES:
            self.probed_items.append(item)
            self.probed_results.append(result)

    def _open_stretch(self) -> None:
        if self._wall_mark is None:
            # A call quicker than CHEAP_CALL_SECONDS, its warm-up included, wakes no pool of
            # threads: the clock need not list them (tens of µs in a fresh process).
            self._clock.start(native_threads=not self.wall or self.wall[0] >= CHEAP_CALL_SECONDS)
            self._queued_mark = run_queue.mark()
            self._stalled = 0.0
            self._wall_mark = time.perf_counter()

    def _read_stretch(self) -> None:
        assert self._wall_mark is not None
        # Reading the clock lists and reads /proc files, which releases the GIL; another of the
        # caller's Python threads may then keep it for a switch interval (5 ms) before this one
        # gets it back. That wait is ours, not the function's, and is left out of the stretch:
        # counted, pure-Python calls of 2 ms beside a spinning thread read 0.27 to 0.78 CPU (in
        # Prefect's engine, 62% waiting once: 40 of them went to three threads).
        read_from, read_cpu_from = time.perf_counter(), time.thread_time()
        cpu = self._clock.seconds()
        read_until = time.perf_counter()
        self._stalled += max(0.0, read_until - read_from - (time.thread_time() - read_cpu_from))
        self.cpu_steady = self._cpu_before + cpu
        self.wall_steady = self._wall_before + read_until - self._wall_mark - self._stalled

    def close_stretch(self) -> None:
        """The steady calls pause here: what happens until the next one (deciding a plan, which
        may measure the machine) is not the function's, and its CPU ratio must not count it."""
        # Read here, not after each call: the read releases the GIL, which another of the
        # caller's Python threads (Prefect's engine) may then keep for a while, in the stretch.
        if self._wall_mark is not None:
            wall, cpu = self.wall_steady - self._wall_before, self.cpu_steady - self._cpu_before
            queued = run_queue.queued_since(self._queued_mark, wall, cpu)
            self.queued_steady = self._queued_before + queued
        self._cpu_before, self._wall_before = self.cpu_steady, self.wall_steady
        self._queued_before = self.queued_steady
        self._wall_mark = None

    def call_batch(self, batch: list[Any]) -> None:
        """Time a batch of cheap calls at once: around each, the clock would cost more than them."""
        first = self.start_index + self.calls
        self._open_stretch()
        results: list[Any] = []
        started, collected = time.perf_counter(), self.collections.seconds
        try:
            for item in batch:  # as the serial runner calls them (runner._extend), not map()
                results.append(self.func(item))
        except Exception as error:
            failed = first + len(results)
            error.add_note(f"amorsize: raised by item {failed} during the dry run")
            raise
        paused = self.collections.seconds - collected
        self.batches.append((time.perf_counter() - started - paused, len(batch)))
        cpu_before, wall_before = self.cpu_steady, self.wall_steady
        self._read_stretch()
        self.batch_clocks.append((self.cpu_steady - cpu_before, self.wall_steady - wall_before))
        # Found once a batch, not at every reading of the mean and the ratio that use them.
        self._unpaused_batches = _unpaused(self.batches)
        kept = [self.batches[index] for index in self._unpaused_batches]
        self._batched_mean = sum(s for s, _ in kept) / sum(n for _, n in kept)
        self.results.extend(results)
        room = max(0, CHEAP_BATCH - len(self.probed_items))
        self.probed_items += batch[:room]
        self.probed_results += results[:room]

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
            self.pairs.append((first, ran, pair.seconds_per_call))
        self.results.extend(pair.results)
        return items[ran:]

    def measure_pickling(self) -> None:
        """Sizes and pickling times per item, from the probed items and results as two lists."""
        self.probing = False
        count = len(self.probed_items)
        if not count or self.not_picklable:
            return
        try:
            size_in, seconds_in = _probe_pickle(self.probed_items)
            size_out, seconds_out = _probe_pickle(self.probed_results)
        except Exception:  # any pickling error rules processes out; name the first culprit
            self.not_picklable = self._first_unpicklable()
            return
        finally:
            self.probed_items, self.probed_results = [], []
        self.bytes_in, self.bytes_out = size_in / count, size_out / count
        self.pickle_in, self.pickle_out = seconds_in / count, seconds_out / count

    def _first_unpicklable(self) -> str:
        for offset, pair in enumerate(zip(self.probed_items, self.probed_results, strict=True)):
            try:
                pickle.dumps(pair, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:
                index = self.start_index + offset
                return f"item {index} or its result does not pickle ({error})"
        return "the items or their results do not pickle"

    def profile(self) -> Profile:
        mean = self.mean_with_probe
        growth = max(0, _resident_bytes() - self.memory_after_first)
        per_call_growth = growth / max(1, self.calls - 1)
        return Profile(
            first_call_seconds=self.wall[0] if self.wall else 0.0,
            seconds_per_item=mean,
            seconds_stdev=_stdev(self.wall[1:]),
            cpu_seconds_per_item=mean * self.cpu_ratio,
            single_thread_seconds=(
                sum(self.single_thread) / len(self.single_thread) if self.single_thread else 0.0
            ),
            gil_share=self.gil_share,
            bytes_in_per_item=self.bytes_in,
            bytes_out_per_item=self.bytes_out,
            pickle_seconds_in=self.pickle_in,
            pickle_seconds_out=self.pickle_out,
            function_bytes=self.function_bytes,
            warm_memory_bytes=max(0, self.memory_after_first - self.memory_before),
            item_memory_bytes=int(max(per_call_growth, self.bytes_out)),
            sampled_items=self.calls,
            sample_seconds=self.elapsed,
            picklable=not self.not_picklable,
            not_picklable_reason=self.not_picklable,
        )


def _enough(
    meter: _Meter, n_items: int | None, sample_size: int | None, parallelism: Parallelism
) -> bool:
    """Whether the dry run has seen enough calls (see the constants above for why)."""
    steady = meter.calls - 1
    if sample_size is not None:
        return steady >= sample_size
    if steady < 1:
        return False
    elapsed = meter.elapsed
    if elapsed >= MAX_SAMPLE_SECONDS:
        return True
    mean = meter.mean
    if (
        meter.wall_steady < MIN_RATIO_SECONDS
        and mean >= CHEAP_CALL_SECONDS
        and meter.sees_native_threads
    ):
        return False
    if steady >= MIN_STEADY_CALLS and _spent_its_share(
        elapsed, mean, n_items, parallelism, meter.cpu_ratio
    ):
        return True
    if steady >= STABLE_CALLS and elapsed >= MIN_SAMPLE_SECONDS and mean > 0:
        return _stdev(meter.wall[1:]) / math.sqrt(steady) < STABLE_ERROR * mean
    return False


def _unpaused(batches: list[tuple[float, int]]) -> list[int]:
    """The indexes of the batches no pause slowed (PAUSED_BATCH_FACTOR); all, if none is left."""
    typical = statistics.median(seconds / calls for seconds, calls in batches)
    kept = [i for i, (s, n) in enumerate(batches) if s / n <= PAUSED_BATCH_FACTOR * typical]
    return kept or list(range(len(batches)))


def _resident_bytes() -> int:
    """This process's resident memory now.

    On Linux one read of /proc/self/statm. psutil.Process() reads two more files first, to guard
    against a reused PID, which cannot happen to the process asking about itself: 0.1 ms against
    0.02 ms for the dry run's three readings, in a fresh process.
    """
    try:
        descriptor = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return int(psutil.Process().memory_info().rss)
    try:
        return int(os.read(descriptor, 256).split()[1]) * _PAGE_BYTES
    finally:
        os.close(descriptor)


def _usable_cpus() -> int:
    """The CPUs this process may run on now (its affinity), whatever quota throttles it: a
    function's own threads may use them all for a moment."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _stdev(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def _pickled_function_size(func: Callable[..., Any]) -> tuple[int, str]:
    """The function's size through cloudpickle, or why it does not pickle."""
    try:
        return len(cloudpickle.dumps(func)), ""
    except Exception as error:
        return 0, f"the function does not pickle, even with cloudpickle ({error})"


def _look_ahead(
    iterator: Iterator[Any],
    n_items: int | None,
    consumed: int,
    profile: Profile,
    memory_bytes: int | None,
) -> tuple[Iterator[Any], int | None, int]:
    """For an iterator of unknown length, read ahead, within bounds, to learn its length."""
    if n_items is not None:
        return iterator, n_items, n_items
    max_bytes = LOOKAHEAD_MAX_BYTES
    if memory_bytes is not None:
        max_bytes = min(max_bytes, int(LOOKAHEAD_MEMORY_SHARE * memory_bytes))
    limit = min(LOOKAHEAD_MAX_ITEMS, int(max_bytes / max(profile.bytes_in_per_item, 1.0)))
    buffer: list[Any] = []
    deadline = time.perf_counter() + LOOKAHEAD_MAX_SECONDS
    for item in iterator:
        buffer.append(item)
        if len(buffer) >= limit or time.perf_counter() > deadline:
            return itertools.chain(buffer, iterator), None, consumed + len(buffer)
    return iter(buffer), consumed + len(buffer), consumed + len(buffer)
