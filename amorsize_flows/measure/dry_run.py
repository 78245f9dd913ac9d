"""The dry run: the first items run here, in the caller, and what they cost.

The sampled items are real work: their results are kept and returned with the rest, so no item is
computed twice and the side effects of a sampled item happen once. The dry run stops as soon as
the estimate is good enough, and never takes more than a small share of the time the map could
take at best.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any

from ..probes.inner_jobs import inner_jobs
from . import gil_probe
from .meter import CHEAP_BATCH, CHEAP_CALL_SECONDS, MIN_RATIO_SECONDS, Meter
from .pickling import PICKLE_PROBES
from .profile import INTERNAL_THREADS_RATIO, Batch, Profile

__all__ = ["Parallelism", "Sample", "probes_fit", "probes_would_run", "sample"]

log = logging.getLogger(__name__)

Parallelism = tuple[int, int]  # (CPUs, threads) a map could use at most

# The dry run may cost this share of the best time the map could take (its serial time over the
# most parallelism it could get). (docs/decisions.md#dry-run-budget)
SAMPLE_FRACTION = 0.02
# Steady calls needed before that share may stop it: one sees the warm-up apart from the rest.
MIN_STEADY_CALLS = 1
# With this many calls and a standard error under STABLE_ERROR of the mean, more calls would not
# change the plan. (docs/decisions.md#dry-run-budget)
STABLE_CALLS = 10
STABLE_ERROR = 0.05
# Below this much sampling, timer noise and cache effects dominate a cheap function's mean.
MIN_SAMPLE_SECONDS = 0.002
# Whatever the item count, a dry run longer than this buys no better plan.
MAX_SAMPLE_SECONDS = 1.0
# Calls timed on a single thread when the function runs threads of its own: two show whether the
# first was an outlier.
SINGLE_THREAD_CALLS = 2
# The probes (those single-thread calls, the GIL probe's pairs) run only where they leave this many
# items per CPU to map: on a few heavy calls they would eat the map they inform.
# (docs/decisions.md#dry-run-budget)
PROBES_LEAVE_PER_CPU = 2
# An iterator of unknown length is read ahead, within these bounds, to learn its length: the
# caller reads the items either way, only earlier. (docs/decisions.md#iterators-read-ahead)
LOOKAHEAD_MAX_ITEMS = 100_000
LOOKAHEAD_MAX_BYTES = 256 << 20
LOOKAHEAD_MAX_SECONDS = 0.05
LOOKAHEAD_MEMORY_SHARE = 0.05


@dataclass
class Sample:
    """The outcome of a dry run: the profile, the results so far, and what is left to map."""

    profile: Profile
    results: list[Any]
    rest: Iterator[Any]
    n_items: int | None
    n_items_lower_bound: int
    _meter: Meter = field(repr=False)

    @property
    def steady_calls(self) -> int:
        """Calls after the first that were timed, alone or in batches (the GIL probe's are not)."""
        return self._meter.times.steady_calls

    def batches(self) -> list[Batch]:
        """The dry run's calls as consecutive batches along the input, each at its cost per call:
        those before the GIL probe at their mean, then the probe's at what they took on their
        threads' clocks, so that a rise along the input shows (docs/decisions.md#trends)."""
        start, done = self._meter.start_index, self._meter.start_index + len(self.results)
        pairs = self._meter.times.pairs
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
        processes_possible: False where only threads can help (a single CPU).
        fork_possible: False where processes would start as fresh interpreters (the caller runs
            threads, and a fork could deadlock): threads then have far less to beat.
        memory_bytes: the memory the map may use; bounds the items read ahead of an iterator.
        start_index: the index of the first item, for error notes.

    Raises:
        Exception: whatever ``func`` raises, with a note naming the item.
    """
    n_items = len(items) if isinstance(items, Sized) else None
    iterator = iter(items)
    meter = Meter(func, start_index)
    # Calls get every CPU for their own joblib work, as a serial loop would give them.
    with inner_jobs(parallelism[0]):
        if not _steady_calls(meter, iterator, n_items, sample_size, parallelism):
            n_items = meter.calls  # the items ran out
    meter.close_stretch()
    meter.measure_pickling()
    # With too few items left for a probe to pay, the model assumes the worst it would test.
    probing = probes_fit(n_items, meter.calls, parallelism[0])
    if probing and meter.cpu_ratio > INTERNAL_THREADS_RATIO:
        _single_thread_calls(meter, iterator)
    elif probing and gil_probe.can_matter(
        meter.cpu_ratio,
        meter.mean,
        meter.pickling.seconds_in + meter.pickling.seconds_out,
        picklable=not meter.pickling.not_picklable,
        processes_possible=processes_possible,
        fork_possible=fork_possible,
    ):
        iterator = _gil_probe_pairs(meter, iterator)
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


def _steady_calls(
    meter: Meter,
    iterator: Iterator[Any],
    n_items: int | None,
    sample_size: int | None,
    parallelism: Parallelism,
) -> bool:
    """Call the first items until :func:`_enough`, cheap ones in growing batches; False where
    the items ran out first."""
    with meter.collections:
        while not _enough(meter, n_items, sample_size, parallelism):
            cheap = meter.calls > PICKLE_PROBES and meter.mean < CHEAP_CALL_SECONDS
            size = CHEAP_BATCH << len(meter.times.batches) if cheap and sample_size is None else 1
            batch = list(itertools.islice(iterator, size))
            if not batch:
                return False
            if len(batch) == 1:
                meter.call(batch[0])
            else:
                meter.call_batch(batch)
    return True


def probes_fit(n_items: int | None, calls: int, cpus: int) -> bool:
    """Whether a probe after ``calls`` calls leaves PROBES_LEAVE_PER_CPU items per CPU to map."""
    return n_items is None or n_items - calls >= PROBES_LEAVE_PER_CPU * cpus


def probes_would_run(n_items: int | None, cpus: int) -> bool:
    """Whether a dry run of ``n_items`` would probe, after its fewest calls (a first, steady)."""
    return probes_fit(n_items, 1 + MIN_STEADY_CALLS, cpus)


def _single_thread_calls(meter: Meter, iterator: Iterator[Any]) -> None:
    """What a call of a function running threads of its own costs on one thread: a parallel
    plan's workers get a share of the CPUs each."""
    from threadpoolctl import threadpool_limits  # only for calls that run threads

    with threadpool_limits(1), inner_jobs(1):
        for item in itertools.islice(iterator, SINGLE_THREAD_CALLS):
            meter.call(item, single_thread=True)


def _gil_probe_pairs(meter: Meter, iterator: Iterator[Any]) -> Iterator[Any]:
    """Whether busy calls hold the GIL, from pairs of calls on two threads (gil_probe); return
    the items with those the pairs left unrun back in front."""
    per_thread = gil_probe.calls_per_thread(meter.mean)
    for _ in range(gil_probe.GIL_PROBE_MAX_PAIRS):
        unrun = meter.call_pair(list(itertools.islice(iterator, 2 * per_thread)))
        iterator = itertools.chain(unrun, iterator)
        if gil_probe.answered(meter.gil_readings):
            break
    return iterator


def _enough(
    meter: Meter, n_items: int | None, sample_size: int | None, parallelism: Parallelism
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
        meter.stretches.wall < MIN_RATIO_SECONDS
        and mean >= CHEAP_CALL_SECONDS
        and meter.stretches.sees_native_threads
    ):
        return False
    if steady >= MIN_STEADY_CALLS and _spent_its_share(
        elapsed, mean, n_items, parallelism, meter.cpu_ratio
    ):
        return True
    if steady >= STABLE_CALLS and elapsed >= MIN_SAMPLE_SECONDS and mean > 0:
        return meter.times.stdev / math.sqrt(steady) < STABLE_ERROR * mean
    return False


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
