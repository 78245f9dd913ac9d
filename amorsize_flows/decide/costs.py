"""The predicted seconds of each kind of plan: the formulas the model weighs candidates with.

Every prediction counts starting the workers, dispatching each chunk, the caller pickling inputs
and unpickling results (a serial bottleneck), the pipe, the CPUs available, the GIL, and the slow
tail that skewed durations leave at the end.
"""

from __future__ import annotations

import functools
import math

from ..data.plan import Candidate, StartMethod
from ..measure.profile import Profile
from . import in_flight
from .situation import Situation, max_threads

__all__ = ["cannot_win", "fits_in_memory", "processes", "serial_seconds", "threads"]

# Plan at most this share of the memory left: the caller, the allocator and the page cache need
# the rest, and an OOM kill costs the whole stage. (docs/decisions.md#memory-headroom)
MEMORY_HEADROOM = 0.8
# The dry run sees only the first items: in the map's tail, calls are assumed to vary by at least
# this share of their mean. (docs/decisions.md#the-tail-of-a-map)
UNSEEN_VARIATION = 0.25


def cannot_win(situation: Situation, backend: str, serial_seconds: float) -> bool:
    """Whether even an ideal plan of ``backend`` (free dispatch, perfect balance) loses."""
    profile, limits, n = situation.profile, situation.limits, situation.n_remaining
    calibration = situation.calibration
    assert calibration is not None
    work = n * profile.seconds_per_item
    if backend == "threads":
        start = calibration.thread_start_seconds(2)
        gil_share = profile.gil_share if profile.gil_share is not None else profile.cpu_ratio
        bound = start + max(work * min(1.0, gil_share), work / max_threads(limits))
    else:
        starts = [calibration.process_start_seconds("loky", 2)]
        if calibration.fork_start is not None:
            starts.append(calibration.process_start_seconds("fork", 2))
        parent = n * (profile.pickle_seconds_in + profile.pickle_seconds_out) / 2
        bound = min(starts) + situation.unmodelled_process_seconds + max(work / limits.cpus, parent)
    return bound > (1 - situation.min_gain) * serial_seconds


def fits_in_memory(situation: Situation, backend: str, n_workers: int, chunksize: int) -> bool:
    profile = situation.profile
    item_bytes = profile.bytes_in_per_item + profile.bytes_out_per_item
    chunks = in_flight.chunks_per_worker(chunksize, item_bytes)
    per_worker = profile.item_memory_bytes + chunks * chunksize * item_bytes
    if backend == "processes" and situation.calibration is not None:
        per_worker += situation.calibration.worker_memory_bytes + profile.warm_memory_bytes
    return n_workers * per_worker <= MEMORY_HEADROOM * situation.limits.memory_bytes


def serial_seconds(situation: Situation) -> float:
    profile = situation.profile
    warmup = 0.0 if situation.parent_warm else profile.warmup_seconds
    return warmup + situation.n_remaining * profile.seconds_per_item


def _tail(profile: Profile, n_workers: int, chunksize: int) -> float:
    """Expected lateness of the slowest of ``n_workers`` last chunks when durations vary.

    The expected maximum of k draws of a normal variable lies Phi^-1((k - 0.375) / (k + 0.25))
    deviations above the mean (Blom's approximation: 0.59 for two workers, where the asymptotic
    sqrt(2 ln k) says 1.18 and would wrongly push two workers toward small, costly chunks); a
    chunk's deviation grows with the square root of its items.
    """
    if n_workers < 2:
        return 0.0
    stdev = max(profile.seconds_stdev, UNSEEN_VARIATION * profile.seconds_per_item)
    return stdev * math.sqrt(chunksize) * _expected_max_of_normals(n_workers)


@functools.cache
def _expected_max_of_normals(count: int) -> float:
    from statistics import NormalDist  # a cheap map never asks (docs/decisions.md#import-cost)

    return NormalDist().inv_cdf((count - 0.375) / (count + 0.25))


def _makespan(situation: Situation, n_workers: int, chunksize: int, chunk_seconds: float) -> float:
    """Seconds until the last chunk is done, chunks handed to whichever worker is free.

    With a known item count, whole rounds of chunks. With an iterator of unknown length, the count
    is only a lower bound, so no chunk size can be trusted to split it evenly: the last chunk may
    start as the others finish and run alone, which costs most for the largest chunks (Graham's
    bound for list scheduling: an even share plus (1 - 1/workers) of a chunk).
    """
    chunks = math.ceil(situation.n_remaining / chunksize)
    if situation.n_items is None:
        return (chunks / n_workers + (n_workers - 1) / n_workers) * chunk_seconds
    return math.ceil(chunks / n_workers) * chunk_seconds


def _call_seconds(profile: Profile, cpus: int, n_workers: int) -> tuple[float, float]:
    """Wall and CPU seconds of one call in one of ``n_workers`` workers sharing ``cpus``.

    A function that runs threads of its own (BLAS) gets them capped to its worker's share of the
    CPUs, so each call slows down; with one CPU each, the dry run measured how much.
    """
    wall, ratio = profile.seconds_per_item, profile.cpu_ratio
    if not profile.runs_own_threads:
        return wall, wall * ratio
    share = max(1, cpus // n_workers)
    if share >= ratio:
        return wall, wall * ratio
    if share == 1 and profile.single_thread_seconds > 0:
        return profile.single_thread_seconds, profile.single_thread_seconds
    return wall * ratio / share, wall * ratio


def threads(situation: Situation, n_workers: int, chunksize: int) -> Candidate:
    profile, n = situation.profile, situation.n_remaining
    calibration, cpus = situation.calibration, situation.limits.cpus
    assert calibration is not None
    per_item, cpu_per_item = _call_seconds(profile, cpus, n_workers)
    # The share of a call that holds the GIL is serial: the GIL probe's, else all its CPU time.
    # Native code with threads of its own counts as serial too: a capped OpenBLAS serializes
    # concurrent calls behind a lock.
    gil_share = profile.gil_share if profile.gil_share is not None else profile.cpu_ratio
    # Each hand-off is Python code holding the GIL, and takes a CPU from the calls
    # (docs/decisions.md#calibration).
    handoffs = math.ceil(n / chunksize) * calibration.thread_task_seconds
    gil_bound = n * per_item * min(1.0, gil_share) + handoffs
    cpu_bound = (n * cpu_per_item + handoffs) / cpus
    chunk_seconds = chunksize * per_item + calibration.thread_task_seconds
    busy = max(_makespan(situation, n_workers, chunksize, chunk_seconds), gil_bound, cpu_bound)
    # Threads start one after another while the first already work: small chunks lose about half
    # the ramp, and the last thread's chunk ends no sooner than the ramp and the chunk.
    ramp = calibration.thread_start_seconds(n_workers)
    seconds = (
        _warmup_if_cold(situation)
        + max(busy + ramp / 2, ramp + chunk_seconds)
        + _tail(profile, n_workers, chunksize)
    )
    return Candidate("threads", n_workers, chunksize, seconds)


def processes(situation: Situation, n_workers: int, chunksize: int) -> Candidate:
    profile, n = situation.profile, situation.n_remaining
    calibration, cpus = situation.calibration, situation.limits.cpus
    assert calibration is not None
    start_method: StartMethod = "fork" if situation.fork_safe and calibration.fork_start else "loky"
    per_item, cpu_per_item = _call_seconds(profile, cpus, n_workers)
    transfer = (
        profile.bytes_in_per_item + profile.bytes_out_per_item
    ) / calibration.pipe_bytes_per_second
    # Pickling and unpickling costs split between the caller and the worker.
    worker_side = (profile.pickle_seconds_in + profile.pickle_seconds_out) / 2
    parent_side = worker_side
    chunks = math.ceil(n / chunksize)
    # A hand-off costs more when the workers keep every CPU busy: the caller's side waits for one.
    busy = min(1.0, n_workers * min(1.0, profile.cpu_ratio) / cpus)
    idle, loaded = calibration.process_task_seconds, calibration.process_task_loaded_seconds
    task_seconds = idle + (loaded - idle) * busy
    chunk_seconds = chunksize * (per_item + worker_side + transfer) + task_seconds
    parent_seconds = n * parent_side + chunks * task_seconds
    cpu_seconds = n * (cpu_per_item + 2 * worker_side)
    if situation.observed_startup and situation.observed_startup[0] == start_method:
        startup = situation.observed_startup[1]
    else:
        startup = calibration.process_start_seconds(start_method, n_workers)
    warm_inherited = start_method == "fork" and situation.parent_warm
    seconds = (
        startup
        + situation.unmodelled_process_seconds
        + (0.0 if warm_inherited else profile.warmup_seconds)
        + max(
            _makespan(situation, n_workers, chunksize, chunk_seconds)
            + _tail(profile, n_workers, chunksize),
            parent_seconds,
            (cpu_seconds + parent_seconds) / cpus,
        )
    )
    return Candidate("processes", n_workers, chunksize, seconds, start_method)


def _warmup_if_cold(situation: Situation) -> float:
    return 0.0 if situation.parent_warm else situation.profile.warmup_seconds
