"""The dry run: results kept, side effects once, lazy iterators, what it measures."""

from __future__ import annotations

import functools
import itertools
import os
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from amorsize_flows import Plan, execute, run
from amorsize_flows.measure.dry_run import MAX_SAMPLE_SECONDS, sample
from amorsize_flows.measure.gil_probe import GIL_RELEASED_SHARE
from amorsize_flows.measure.identity import function_identity
from amorsize_flows.probes import blas_pools
from amorsize_flows.probes.procfs import resident_bytes
from tests.markers import SCHEDULING
from tests.workloads import (
    append_to,
    busy,
    busy_or_hash,
    hash_blob,
    lock_on,
    on_cpus,
    pause_at,
    record_collecting_at,
    sleepy,
    square,
)


def test_results_are_kept_and_rest_continues_in_order() -> None:
    dry = sample(square, list(range(1000)), parallelism=(2, 64))
    assert 2 <= len(dry.results) < 1000
    assert dry.results == [square(x) for x in range(len(dry.results))]
    assert list(dry.rest) == list(range(len(dry.results), 1000))
    assert dry.n_items == 1000


def test_each_sampled_item_runs_once(tmp_path: Path) -> None:
    log = tmp_path / "calls.txt"
    dry = sample(functools.partial(append_to, log_path=str(log)), range(50), sample_size=5)
    assert dry.results == list(range(6))
    assert log.read_text().split() == [str(x) for x in range(6)]


def test_generator_is_consumed_lazily_and_chained_back() -> None:
    pulled = []

    def numbers():
        for x in itertools.count():
            pulled.append(x)
            yield x

    dry = sample(square, numbers(), sample_size=3)
    assert dry.n_items is None  # endless: only a lower bound is known
    assert dry.n_items_lower_bound >= 4
    assert len(pulled) == dry.n_items_lower_bound  # read ahead, but boundedly
    assert list(itertools.islice(dry.rest, 3)) == [4, 5, 6]


def test_short_generator_length_becomes_known() -> None:
    dry = sample(square, (x for x in range(20)), sample_size=2)
    assert dry.n_items == 20
    assert dry.results + [square(x) for x in dry.rest] == [square(x) for x in range(20)]


def test_long_generator_of_slow_calls_has_its_length_read() -> None:
    # 1500 calls of 2 ms are 3 s of work: long enough to pay for workers, but the chunk size that
    # splits the map evenly needs the length, and reading 1500 numbers ahead costs microseconds.
    dry = sample(sleepy, (0.002 for _ in range(1500)), sample_size=2)
    assert dry.n_items == 1500
    assert len(dry.results) + sum(1 for _ in dry.rest) == 1500


@pytest.mark.parametrize(("memory_mb", "most_held"), [(20, 1), (200, 10)])
def test_look_ahead_holds_at_most_a_share_of_the_memory(memory_mb: int, most_held: int) -> None:
    pulled = 0

    def megabytes():
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield bytes(1 << 20)

    dry = sample(len, megabytes(), sample_size=2, memory_bytes=memory_mb << 20)
    assert dry.n_items is None  # 100 MB were not read to learn the length
    assert 1 <= pulled - len(dry.results) <= most_held
    assert len(dry.results) + sum(1 for _ in dry.rest) == 100


def test_empty_input() -> None:
    dry = sample(square, [], parallelism=(2, 64))
    assert (dry.results, dry.n_items, dry.profile.sampled_items) == ([], 0, 0)


def test_measures_cpu_versus_waiting() -> None:
    cpu = sample(busy, [0.002] * 200, sample_size=5).profile
    # What a call costs now, timed directly: `busy` is sized once per process, and this host's
    # speed drifts, so its nominal 2 ms can be 3 ms a minute later (seen in CI).
    direct = _seconds_per_call(busy, 0.002)
    waiting = sample(sleepy, [0.002] * 200, sample_size=5).profile
    # Likewise what a 2 ms sleep takes now: a thread woken on an idle vCPU here can run 1 ms late.
    slept = _seconds_per_call(sleepy, 0.002)
    assert cpu.cpu_ratio > 0.7
    assert waiting.cpu_ratio < 0.3
    assert cpu.seconds_per_item == pytest.approx(direct, rel=0.5)
    assert waiting.seconds_per_item == pytest.approx(slept, rel=0.5)


def _seconds_per_call(func: Callable[[float], Any], arg: float, calls: int = 5) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        func(arg)
    return (time.perf_counter() - started) / calls


def test_measures_sizes_and_warmup() -> None:
    profile = sample(bytes, [100_000] * 50, sample_size=3).profile
    assert profile.bytes_out_per_item > 100_000
    assert profile.bytes_in_per_item < 100
    assert profile.picklable


def test_measures_memory_kept_by_the_warm_up_and_by_each_call() -> None:
    kept: list[bytes] = []

    def load_then_cache(item: int) -> int:
        if not kept:
            kept.append(b"\1" * (64 << 20))  # a model loaded by the first call
        kept.append(b"\2" * (1 << 20))  # and a cache that grows by 1 MB a call
        return item

    profile = sample(load_then_cache, range(100), sample_size=6).profile
    assert 64 << 20 <= profile.warm_memory_bytes <= 70 << 20
    # malloc may serve some megabytes from memory freed earlier, already resident: 0.8 MB a call
    # after other tests had run.
    assert 0.5 * (1 << 20) <= profile.item_memory_bytes <= 1.2 * (1 << 20)


def test_resident_memory_is_what_psutil_reports() -> None:
    untouched = bytearray(256 << 20)  # reserved, never written: not resident
    assert abs(resident_bytes() - psutil.Process().memory_info().rss) < 1 << 20
    del untouched


def test_unpicklable_function_is_reported_not_fatal() -> None:
    import threading

    lock = threading.Lock()
    dry = sample(lambda x: (lock, x)[1], range(10), sample_size=2)
    assert not dry.profile.picklable
    assert "does not pickle" in dry.profile.not_picklable_reason


def test_items_are_pickled_as_a_chunk_travels() -> None:
    # Alone, an int pickles to 5 bytes, mostly the pickle's frame; in a chunk it costs 2. Probed
    # alone, cheap calls over small items would look too costly to hand to processes. A fixed
    # sample size: the adaptive dry run stopped after 3 steady calls in one CI run, a pause of a
    # few ms having used up its share (2% of the best time of the map), and 4 ints pickle to 6
    # bytes each.
    profile = sample(square, range(1_000_000), sample_size=20).profile
    assert profile.bytes_in_per_item < len(pickle.dumps(7, protocol=pickle.HIGHEST_PROTOCOL))
    assert profile.picklable


def test_a_result_that_does_not_pickle_is_named() -> None:
    dry = sample(lock_on, range(20), sample_size=5)
    assert not dry.profile.picklable
    assert "item 3 or its result does not pickle" in dry.profile.not_picklable_reason
    assert len(dry.results) == 6  # the dry run's results are kept all the same


def test_one_pause_does_not_make_cheap_calls_look_costly_or_waiting() -> None:
    # Cheap calls are timed in batches (64, then twice the last); a batch that stalled once (20 ms
    # here; a collection of the caller's heap, or the host taking the CPU, in life) is left out of
    # the mean instead of adding 13 µs to every call, and out of the CPU ratio: counted there, it
    # read the calls as mostly waiting, which threads would overlap.
    dry = sample(pause_at, range(1_000_000), parallelism=(2, 64))
    assert dry.n_items_lower_bound > 500 and 500 in dry.results  # the stalled item was sampled
    assert dry.profile.seconds_per_item < 5e-6
    assert dry.profile.busy, dry.profile.cpu_ratio


def test_dry_run_stays_small_for_cheap_functions() -> None:
    dry = sample(square, range(1_000_000), parallelism=(2, 64))
    assert dry.profile.sample_seconds < MAX_SAMPLE_SECONDS / 10
    assert len(dry.results) < 100_000


def test_error_in_dry_run_names_the_item() -> None:
    def boom(x: int) -> int:
        if x == 2:
            raise KeyError("no")
        return x

    with pytest.raises(KeyError) as caught:
        sample(boom, range(10), sample_size=5)
    assert "item 2" in caught.value.__notes__[0]


def test_function_identity_tracks_code_and_partial_args() -> None:
    name, digest = function_identity(square)
    assert name == "tests.workloads:square"
    assert function_identity(square) == (name, digest)
    assert function_identity(busy)[1] != digest
    assert (
        function_identity(functools.partial(append_to, log_path="a"))[1]
        != function_identity(functools.partial(append_to, log_path="b"))[1]
    )


# SCHEDULING: in one fresh-clone CI run, while the host took 0.17 s of CPU away, 4 MB hashes read
# as taking turns in every pair of three dry runs (share 0.67 at the lowest); it passed in 8 runs
# alone and 3 full runs of the suite right after.
@SCHEDULING
def test_gil_probe_tells_python_from_native_code() -> None:
    import hashlib

    def digest(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()  # releases the GIL for large buffers

    python = sample(busy, [0.002] * 100, sample_size=5, processes_possible=False).profile
    assert python.gil_share is not None and python.gil_share > 0.6
    # Other processes on a busy machine can hide the overlap in one dry run; not in all three.
    native = [sample(digest, [b"x" * (4 << 20)] * 40, sample_size=5).profile for _ in range(3)]
    # Pickling 4 MB costs more than hashing it: the probe runs even where processes could.
    assert min(p.gil_share for p in native if p.gil_share is not None) < 0.5


def test_gil_probe_runs_where_processes_would_start_fresh_interpreters() -> None:
    # Busy GIL-free calls with tiny inputs and results: where processes fork, threads gain
    # nothing over them, and the probe is not worth its calls; where they would start fresh
    # interpreters (the caller runs threads), threads could beat them, if the calls overlap.
    # Calls of about 13 ms: just after a forking map (an earlier test's), while its workers exit,
    # two threads of 1.4 ms calls ran one after the other here, as if they held the GIL.
    items = [20] * 30
    forked = sample(hash_blob, items, sample_size=3).profile
    assert forked.gil_share is None
    # Other processes on a busy machine can hide the overlap in one dry run; not in all three.
    fresh = [sample(hash_blob, items, sample_size=3, fork_possible=False).profile for _ in range(3)]
    assert all(p.gil_share is not None for p in fresh)
    assert min(p.gil_share for p in fresh if p.gil_share is not None) < 0.5


@SCHEDULING
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_gil_probe_tries_again_when_its_threads_found_no_free_cpu() -> None:
    # The probe's first pair of calls moves both its threads to one CPU, as when other processes
    # hold the rest: GIL-free calls take turns there, as if they held the GIL. The calls after
    # it run on every CPU.
    every = frozenset(os.sched_getaffinity(0))
    one = frozenset({min(every)})

    def items(func: Callable[[Any], Any], arg: object) -> list[Any]:
        # sample_size=3: the first call and three steady ones, then the probe's pairs, one call
        # per thread for calls over a millisecond.
        return [(every, func, arg)] * 4 + [(one, func, arg)] * 2 + [(every, func, arg)] * 24

    try:
        native = sample(on_cpus, items(hash_blob, 20), sample_size=3, fork_possible=False)
        python = sample(on_cpus, items(busy, 0.013), sample_size=3, processes_possible=False)
    finally:
        os.sched_setaffinity(0, every)
    assert native.profile.gil_share is not None and native.profile.gil_share < 0.5
    assert python.profile.gil_share is not None and python.profile.gil_share > 0.6


@SCHEDULING
def test_one_pair_that_took_turns_does_not_settle_the_gil_probe() -> None:
    # A pair can read GIL-free calls as taking turns (a thread woken late, other processes on a
    # CPU), never the reverse: such a reading waits for another pair, and the lowest stands.
    # Here the first pair's calls really hold the GIL; the first call and three steady ones
    # come before it, and it takes one item per thread for calls over a millisecond.
    items = [("hash", 2)] * 4 + [("busy", 0.002)] * 2 + [("hash", 2)] * 24
    dry = sample(busy_or_hash, items, sample_size=3, fork_possible=False)
    assert dry.profile.gil_share is not None and dry.profile.gil_share < GIL_RELEASED_SHARE
    done = len(dry.results)
    assert dry.results == [busy_or_hash(item) for item in items[:done]]
    assert list(dry.rest) == items[done:]


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs and CPU affinity",
)
@SCHEDULING
def test_gil_probe_reads_gil_free_calls_right_after_a_map() -> None:
    # Right after a map, Linux often ran the probe's two threads on one CPU, one after the
    # other, for a dozen pairs: GIL-free hashing read as holding the GIL in the first probe
    # after 7 forking maps of 8 (5 of 8 threads maps). Its threads are now kept apart. A probe
    # whose every pair other processes crowded still reads "held": one in six is let pass.
    # Where numpy is loaded (by earlier tests), its pool spins after the map, restored: waited
    # out first, as before every dry run of a map.
    every = os.sched_getaffinity(0)
    shares = []
    for _ in range(6):
        execute(busy, [0.002] * 400, plan=Plan("processes", 2, 50, start_method="fork"))
        blas_pools.settle()
        dry = sample(hash_blob, [2] * 60, sample_size=3, fork_possible=False)
        shares.append(dry.profile.gil_share)
    assert sum(share is None or share >= 0.5 for share in shares) <= 1, shares
    assert os.sched_getaffinity(0) == every  # the caller's CPUs are given back


@SCHEDULING
def test_gil_probe_runs_batches_of_short_calls() -> None:
    import hashlib

    def digest(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()  # tens of microseconds for 64 KB, GIL released

    blobs = [bytes([i % 256]) * (64 << 10) for i in range(2000)]
    # Where processes would fork, the probe runs only if pickling a blob costs a tenth of its
    # call: near that line, and not always over it (one run of the suite in three, here).
    native = [sample(digest, blobs, sample_size=5, fork_possible=False).profile for _ in range(3)]
    assert all(p.gil_share is not None for p in native)
    assert min(p.gil_share for p in native if p.gil_share is not None) < 0.5
    python = sample(busy, [3e-5] * 2000, sample_size=5, processes_possible=False).profile
    assert python.gil_share is not None and python.gil_share > 0.6


def test_the_gil_probe_s_calls_are_counted_at_their_own_cost_along_the_input() -> None:
    # Sorted by cost: the probe's calls come after the steady ones and cost more. Counted at the
    # steady calls' cost, as before, a serial plan's re-plan (trend) found no rise in them.
    items = [i * 2e-5 for i in range(300)]
    dry = sample(busy, items, processes_possible=False)
    steady, probed = dry.batches()
    assert steady.first == 0
    assert probed.first == steady.items and probed.first + probed.items == len(dry.results)
    assert probed.seconds_per_item > 3 * steady.seconds_per_item


def test_the_profile_s_cost_of_a_call_counts_the_gil_probe_s_calls() -> None:
    # Sorted by cost, as above: the probe's calls are the dearest the dry run saw. Left out, the
    # profile said a call costs what the first few did (24.5 µs, where the probe ran 8 calls
    # 150 times dearer), and only a re-plan a batch later saw the difference.
    items = [i * 2e-5 for i in range(300)]
    dry = sample(busy, items, processes_possible=False)
    first, probed = dry.batches()
    steady_calls = dry.steady_calls
    assert probed.items > 0 and steady_calls > 0
    # The first call is warm-up, timed apart; the rest are weighed by how many each stretch ran.
    per_item = dry.profile.seconds_per_item
    assert first.seconds_per_item < per_item < probed.seconds_per_item
    weighted = (first.seconds_per_item * steady_calls + probed.seconds_per_item * probed.items) / (
        steady_calls + probed.items
    )
    assert per_item == pytest.approx(weighted, rel=0.15)  # CPU over the ratio: about 1 here


def test_gil_probe_stops_when_calls_grow_dearer_and_hands_the_rest_back() -> None:
    # Sorted by cost: the probe, sized from the first 25 µs calls, would take about 80 items,
    # the last at 1.6 ms (about 65 ms in all). Its deadline stops a pair at twice its budget
    # (4 ms): about 20 items for the first pair, 7 to 10 for the second the probe needs here,
    # and as many for a third where a pair found the CPUs crowded.
    items = [2.5e-5] * 4 + [i * 2e-5 for i in range(1, 300)]
    dry = sample(busy, items, sample_size=3, processes_possible=False)
    assert dry.profile.gil_share is not None
    assert len(dry.results) < 60
    assert dry.results + list(dry.rest) == items


def test_gil_probe_is_not_fooled_by_first_calls_slower_than_the_rest() -> None:
    # Steady calls of 6 ms, then the probe's of 2 ms: timed against the earlier calls' mean,
    # two calls taking turns on the GIL looked like calls overlapping (share 0 instead of 1).
    items = [0.006] * 3 + [0.002] * 20
    dry = sample(busy, items, sample_size=2, processes_possible=False)
    assert dry.profile.gil_share is not None and dry.profile.gil_share > 0.6


def test_a_garbage_collection_in_the_dry_run_is_left_out_of_what_a_call_costs() -> None:
    # A collection walks the whole heap, and lands on whichever call allocated last. In one of
    # the dry run's two batches of cheap calls, it cannot be told from the calls by comparing
    # batches: 0.5 µs dict-building calls read as 7 µs, and 100k of them went to processes
    # (0.43x). Any plan pays for collections alike: the results are built here either way.
    ballast = [[] for _ in range(300_000)]  # a heap whose collection takes milliseconds
    items = list(range(100_000))
    clean = sample(functools.partial(record_collecting_at, at=-1), items, parallelism=(2, 64))
    # Item 100 is in the second batch, after 9 calls timed alone and a batch of 64.
    paused = sample(functools.partial(record_collecting_at, at=100), items, parallelism=(2, 64))
    del ballast
    assert paused.profile.sampled_items > 100
    assert paused.profile.seconds_per_item < 4 * clean.profile.seconds_per_item


# SCHEDULING: in one fresh-clone CI run, while the host took 0.05 s of CPU away, 2 ms calls
# beside the hashing thread read 4.7 ms each, 0.44 CPU.
@SCHEDULING
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_cpu_of_the_caller_s_other_python_threads_is_not_counted_as_the_function_s() -> None:
    # In Prefect's test harness the API server runs beside the task, and a pure-Python call read
    # as 1.7 CPUs' worth of threads of its own. Here another thread hashes meanwhile.
    import hashlib

    stop = threading.Event()
    blob = bytes(16 << 20)

    def hash_until_stopped() -> None:
        while not stop.is_set():
            hashlib.sha256(blob).digest()  # 16 MB: milliseconds without the GIL

    neighbour = threading.Thread(target=hash_until_stopped)
    neighbour.start()
    try:
        dry = sample(busy, [0.002] * 50, sample_size=5, processes_possible=False)
    finally:
        stop.set()
        neighbour.join()
    assert 0.5 < dry.profile.cpu_ratio < 1.5, dry.profile.cpu_ratio


@pytest.mark.parametrize(("func", "busy_calls"), [(busy, True), (sleepy, False)])
def test_waits_for_the_gil_while_the_dry_run_reads_its_clock_are_not_the_function_s(
    func: Callable[[float], float], busy_calls: bool
) -> None:
    # Reading the CPU clock after a call releases the GIL, which another Python thread of the
    # caller's (Prefect's engine) then keeps for up to a switch interval. Counted as the calls'
    # waits, 2 ms pure-Python calls beside a spinning thread read 0.27 to 0.78 CPU, and a
    # Prefect flow once mapped 40 of them on three threads (0.76x). Calls that do wait still
    # read as waiting beside the same thread.
    stop = threading.Event()

    def spin_until_stopped() -> None:
        while not stop.is_set():
            sum(range(1000))

    neighbour = threading.Thread(target=spin_until_stopped)
    neighbour.start()
    try:
        profiles = [
            sample(func, [0.002] * 40, sample_size=10, processes_possible=False).profile
            for _ in range(3)
        ]
    finally:
        stop.set()
        neighbour.join()
    assert [p.busy for p in profiles] == [busy_calls] * 3, [p.cpu_ratio for p in profiles]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_a_cpu_ratio_beyond_the_cpus_the_process_may_use_is_not_believed() -> None:
    # Once, one 4.2 ms call of pure Python read 21 ms of CPU on 2 CPUs: 5.0 CPUs' worth of
    # threads of its own, and 400 such calls ran serially. Nearly two CPUs' worth is real (BLAS)
    # where two CPUs are usable, impossible on one.
    original = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(original)})
        on_one = sample(busy, [0.002] * 3, sample_size=1)._meter
    finally:
        os.sched_setaffinity(0, original)
    on_all = sample(busy, [0.002] * 3, sample_size=1)._meter
    for meter in (on_one, on_all):
        meter.stretches.cpu, meter.stretches.wall = 0.021, 0.0042
        assert meter.cpu_ratio == 1.0
        meter.stretches.cpu = 0.0078
    assert on_one.cpu_ratio == 1.0
    if len(original) >= 2:
        assert on_all.cpu_ratio == pytest.approx(0.0078 / 0.0042)


def test_a_dry_run_extended_keeps_results_and_learns_an_iterator_s_length() -> None:
    # No memory to read ahead in: the iterator's length stays unknown after the dry run.
    dry = sample(busy, iter([0.001] * 6), sample_size=2, memory_bytes=1)
    assert len(dry.results) == 3 and dry.n_items is None
    assert dry.extend(10) == 3
    assert dry.results == [0.001] * 6 and dry.n_items == 6 and list(dry.rest) == []
    assert dry.steady_calls == 5 and dry.profile.sampled_items == 6


def test_probes_leave_a_few_heavy_items_to_the_map() -> None:
    # Five 0.2 s calls on 2 CPUs, where processes would be fresh interpreters (so threads could
    # win): the GIL probe's pairs would run the items the plan is for.
    dry = sample(busy, [0.2] * 5, parallelism=(2, 64), fork_possible=False)
    assert dry.profile.sampled_items <= 2, dry.profile.sampled_items
    assert dry.profile.gil_share is None
    # With enough items left, the probe still runs.
    many = sample(busy, [0.02] * 200, parallelism=(2, 64), fork_possible=False)
    assert many.profile.gil_share is not None


def test_a_record_of_a_few_heavy_items_is_used_though_it_lacks_the_gil_share() -> None:
    # Beside a thread (processes would be fresh interpreters) its dry run could not spare items
    # for the GIL probe, nor could the next one: sampling again would run the same items
    # serially again.
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        first = run(busy, [0.05] * 5)
        assert first.record.profile["gil_share"] is None
        later = run(busy, [0.05] * 5, history=first.record)
    finally:
        stop.set()
        helper.join()
    assert later.plan.source == "history", later.plan.reason
