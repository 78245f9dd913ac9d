"""The cost model: from what a call costs and what the worker may use, to the cheapest plan.

Pure: no clocks, no processes, no files. Every candidate (serial; threads and processes at every
sensible worker count and chunk size) gets a predicted wall time that counts starting the workers,
dispatching each chunk, the caller pickling inputs and unpickling results (a serial bottleneck),
moving bytes through the pipe, the CPUs available, memory per worker, and the slow tail that skewed
durations leave at the end. The cheapest wins, unless it beats a plain loop by too little to be
worth the risk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist

from . import in_flight
from .calibrate import Calibration
from .limits import MAX_WORKERS_ENV, WorkerLimits
from .plan import Candidate, Plan, StartMethod
from .profile import Profile

__all__ = ["MIN_GAIN", "Constraints", "Situation", "choose", "duration_text", "max_threads"]

# A parallel plan must be predicted at least 10% faster than a plain loop: the model's errors on
# short maps are of that order, and a loop never deadlocks, never pickles and never OOMs.
MIN_GAIN = 0.10
# Plan at most 80% of the memory that is left: the caller, the allocator's slack and the page
# cache need the rest, and an OOM kill costs the whole stage.
MEMORY_HEADROOM = 0.8
# The dry run sees only the first items; later ones may differ (inputs sorted by size are common),
# so in the tail of the map calls are assumed to vary by at least this share of their mean.
UNSEEN_VARIATION = 0.25
# Chunks per worker a plan gets where they are cheap: variation by position (inputs sorted by
# size) does not average out within a chunk, and only later chunks can even it out. 300 calls
# sorted from 6 ms down to nothing went in one chunk per worker, the first two holding three
# quarters of the work: 0.73 s, against 0.52 s in four chunks per worker (Pool's choice too).
MIN_CHUNKS_PER_WORKER = 4
# ... bought when the model predicts them at most this much slower than the best chunk size.
BALANCE_PREMIUM = 0.02
# Threads per CPU at most, for work that mostly waits: past this, per-thread overhead and the
# servers being waited on, not the CPUs, are the limit.
THREADS_PER_CPU = 32
_STANDARD_NORMAL = NormalDist()


@dataclass(frozen=True)
class Constraints:
    """Settings the caller fixed; the model searches only what is left open."""

    backend: str | None = None
    n_jobs: int | None = None
    chunksize: int | None = None


@dataclass(frozen=True)
class Situation:
    """Everything the model decides from.

    Attributes:
        n_remaining: items still to map (the dry run's are done).
        n_items: all items of the map, or None for an iterator of unknown length.
        spent_seconds: seconds already spent on this call (the dry run).
        parent_warm: whether the caller has run the function already (its warm state is then
            inherited by forked workers).
        fork_safe: whether forking is safe now (a single-threaded caller on a POSIX system).
        observed_startup: (start method, seconds) a previous run measured to start its workers,
            which includes importing the function's module, unlike the calibration.
        calibration: the machine's costs; None for a map too small for any pool to pay off,
            which is then planned serially without measuring the machine.
        min_gain: the share of the serial time a parallel plan must save to be chosen; more
            than MIN_GAIN where the evidence is known to be noisy.
    """

    profile: Profile
    limits: WorkerLimits
    calibration: Calibration | None
    n_remaining: int
    n_items: int | None
    spent_seconds: float = 0.0
    parent_warm: bool = True
    fork_safe: bool = True
    observed_startup: tuple[str, float] | None = None
    min_gain: float = MIN_GAIN


def choose(
    situation: Situation,
    constraints: Constraints = Constraints(),
    *,
    function: tuple[str, str] = ("", ""),
    source: str = "sampled",
) -> Plan:
    """The cheapest plan for ``situation`` within ``constraints``, with every candidate weighed."""
    notes: list[str] = []
    serial = Candidate("serial", 1, max(1, situation.n_remaining), _serial_seconds(situation))
    candidates = [serial]
    backends = _allowed_backends(situation, constraints, notes)
    if situation.n_remaining > 1 and situation.calibration is not None:
        unconstrained = constraints == Constraints()
        for backend in ("threads", "processes"):
            if backend not in backends:
                continue
            if unconstrained and _cannot_win(situation, backend, serial.predicted_seconds):
                continue  # even an ideal plan of this kind loses: no need to weigh each one
            candidates += _best_per_worker_count(situation, constraints, backend, notes)
    candidates.sort(key=lambda candidate: candidate.predicted_seconds)
    if constraints.backend is not None:
        forced = [c for c in candidates if c.backend == constraints.backend]
        chosen = forced[0] if forced else serial
        if not forced:
            notes.append(f"{constraints.backend} is impossible here, so the map runs serially")
    else:
        chosen = candidates[0]
        if (
            chosen.backend != "serial"
            and chosen.predicted_seconds > (1 - situation.min_gain) * serial.predicted_seconds
        ):
            notes.append(
                f"the best parallel plan ({_describe(chosen)}) would save under "
                f"{situation.min_gain:.0%}, not worth its risks"
            )
            chosen = serial

    spent = situation.spent_seconds
    serial_total = spent + serial.predicted_seconds
    predicted_total = spent + chosen.predicted_seconds
    speedup = serial_total / predicted_total if predicted_total > 0 else 1.0
    chunksize = max(1, chosen.chunksize if chosen.backend != "serial" else 1)
    return Plan(
        backend=chosen.backend,
        n_jobs=chosen.n_jobs,
        chunksize=chunksize,
        estimated_speedup=round(speedup, 3),
        reason=_reason(situation, chosen, notes),
        start_method=chosen.start_method,
        predicted_seconds=predicted_total,
        serial_seconds=serial_total,
        n_items=situation.n_items,
        function=function[0],
        function_digest=function[1],
        source=source,
        limits=situation.limits.to_dict(),
        profile=situation.profile.to_dict(),
        candidates=tuple(candidates),
    )


# --- which backends, which sizes -------------------------------------------------------------


def _allowed_backends(situation: Situation, constraints: Constraints, notes: list[str]) -> set[str]:
    allowed = {"threads", "processes"}
    if constraints.backend is not None:
        allowed &= {constraints.backend}
    if "processes" in allowed:
        if situation.limits.daemonic:
            allowed.discard("processes")
            notes.append("processes cannot start inside a daemonic process (a Celery worker)")
        elif not situation.profile.picklable:
            allowed.discard("processes")
            notes.append(f"processes are out: {situation.profile.not_picklable_reason}")
        elif situation.limits.cpus < 2 and constraints.backend != "processes":
            allowed.discard("processes")
    return allowed


def _cannot_win(situation: Situation, backend: str, serial_seconds: float) -> bool:
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
        bound = min(starts) + max(work / limits.cpus, parent)
    return bound > (1 - situation.min_gain) * serial_seconds


def max_threads(limits: WorkerLimits) -> int:
    """The most threads a map may use: many per CPU for waiting work, unless the caller capped it."""
    if limits.cpus_source in (MAX_WORKERS_ENV, "max_workers argument"):
        return limits.cpus  # the caller capped workers of every kind
    return THREADS_PER_CPU * limits.cpus


def _worker_counts(situation: Situation, constraints: Constraints, backend: str) -> list[int]:
    if constraints.n_jobs is not None:
        return [constraints.n_jobs]
    cap = situation.limits.cpus if backend == "processes" else max_threads(situation.limits)
    cap = min(cap, max(1, situation.n_remaining))
    counts = set(range(2, min(cap, 8) + 1)) | set(_powers_of_two(2, cap)) | {cap}
    return sorted(count for count in counts if count >= 2 or cap == 1)


def _chunk_sizes(n_remaining: int, n_workers: int, constraints: Constraints) -> list[int]:
    if constraints.chunksize is not None:
        return [constraints.chunksize]
    largest = max(1, math.ceil(n_remaining / n_workers))
    # Sizes that split the items evenly into 1, 2, 4, ... rounds per worker leave no worker idle
    # at the end; powers of two cover small chunks for skewed or cheap work.
    even = {math.ceil(n_remaining / (n_workers * rounds)) for rounds in _powers_of_two(1, largest)}
    return sorted(set(_powers_of_two(1, largest)) | even)


def _powers_of_two(low: int, high: int) -> Iterator[int]:
    value = low
    while value <= high:
        yield value
        value *= 2


def _best_per_worker_count(
    situation: Situation, constraints: Constraints, backend: str, notes: list[str]
) -> list[Candidate]:
    """For each worker count that fits in memory, its cheapest chunk size."""
    best: list[Candidate] = []
    memory_capped = False
    for n_workers in _worker_counts(situation, constraints, backend):
        if constraints.n_jobs is not None and backend == "processes":
            n_workers = min(n_workers, situation.limits.cpus)
        options = []
        for chunksize in _chunk_sizes(situation.n_remaining, n_workers, constraints):
            if not _fits_in_memory(situation, backend, n_workers, chunksize):
                memory_capped = True
                continue
            if backend == "threads":
                options.append(_threads(situation, n_workers, chunksize))
            else:
                options.append(_processes(situation, n_workers, chunksize))
        if options:
            best.append(_balanced(options, situation.n_remaining, n_workers))
    if memory_capped:
        notes.append(
            f"memory ({_bytes(situation.limits.memory_bytes)} free, "
            f"{situation.limits.memory_source}) rules out more {backend} or larger chunks"
        )
    if (
        constraints.n_jobs is not None
        and backend == "processes"
        and constraints.n_jobs > situation.limits.cpus
    ):
        notes.append(
            f"n_jobs={constraints.n_jobs} was lowered to the {situation.limits.cpus} CPUs "
            f"this worker may use ({situation.limits.cpus_source})"
        )
    return best


def _balanced(options: list[Candidate], n_remaining: int, n_workers: int) -> Candidate:
    """The cheapest option, unless it leaves a worker fewer than MIN_CHUNKS_PER_WORKER chunks
    and one that does not is predicted within BALANCE_PREMIUM of it."""
    cheapest = min(options, key=lambda candidate: candidate.predicted_seconds)

    def enough_chunks(candidate: Candidate) -> bool:
        return math.ceil(n_remaining / candidate.chunksize) >= MIN_CHUNKS_PER_WORKER * n_workers

    balanced = [candidate for candidate in options if enough_chunks(candidate)]
    if enough_chunks(cheapest) or not balanced:
        return cheapest
    insured = min(balanced, key=lambda candidate: candidate.predicted_seconds)
    if insured.predicted_seconds <= (1 + BALANCE_PREMIUM) * cheapest.predicted_seconds:
        return insured
    return cheapest


def _fits_in_memory(situation: Situation, backend: str, n_workers: int, chunksize: int) -> bool:
    profile = situation.profile
    item_bytes = profile.bytes_in_per_item + profile.bytes_out_per_item
    chunks = in_flight.chunks_per_worker(chunksize, item_bytes)
    per_worker = profile.item_memory_bytes + chunks * chunksize * item_bytes
    if backend == "processes" and situation.calibration is not None:
        per_worker += situation.calibration.worker_memory_bytes + profile.warm_memory_bytes
    return n_workers * per_worker <= MEMORY_HEADROOM * situation.limits.memory_bytes


# --- the costs ---------------------------------------------------------------------------------


def _serial_seconds(situation: Situation) -> float:
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


def _expected_max_of_normals(count: int) -> float:
    return _STANDARD_NORMAL.inv_cdf((count - 0.375) / (count + 0.25))


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


def _threads(situation: Situation, n_workers: int, chunksize: int) -> Candidate:
    profile, n = situation.profile, situation.n_remaining
    calibration, cpus = situation.calibration, situation.limits.cpus
    assert calibration is not None
    per_item, cpu_per_item = _call_seconds(profile, cpus, n_workers)
    # The share of a call that holds the GIL is serial: measured by the dry run's two-thread probe,
    # else taken as all of its CPU time. Native code running threads of its own counts as serial
    # too: OpenBLAS capped to one thread serializes concurrent calls behind a lock (measured:
    # threads x2 gained 1.1x where processes gained 1.5x).
    gil_share = profile.gil_share if profile.gil_share is not None else profile.cpu_ratio
    # Each hand-off is Python code (the caller's loop, the executor's queue): it holds the GIL,
    # and takes a CPU from the calls. (Left out, 2000 hashes of 64 KB, GIL-free, were planned on
    # threads x3 in chunks of 1, predicted 0.041 s; they took 0.096, chunks of 236 took 0.050.)
    handoffs = math.ceil(n / chunksize) * calibration.thread_task_seconds
    gil_bound = n * per_item * min(1.0, gil_share) + handoffs
    cpu_bound = (n * cpu_per_item + handoffs) / cpus
    chunk_seconds = chunksize * per_item + calibration.thread_task_seconds
    busy = max(_makespan(situation, n_workers, chunksize, chunk_seconds), gil_bound, cpu_bound)
    # Threads start one after another, and the first work while the last start: small chunks
    # lose about half the ramp, and a chunk that the last thread takes ends no sooner than the
    # ramp and the chunk. (Counted whole before any chunk, the ramp of 64 threads, 32 ms here,
    # overstated 300 waits of 10 ms in chunks of 1 by 16 ms; one chunk of 5 per thread does pay
    # all of it.)
    ramp = calibration.thread_start_seconds(n_workers)
    seconds = (
        _warmup_if_cold(situation)
        + max(busy + ramp / 2, ramp + chunk_seconds)
        + _tail(profile, n_workers, chunksize)
    )
    return Candidate("threads", n_workers, chunksize, seconds)


def _processes(situation: Situation, n_workers: int, chunksize: int) -> Candidate:
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


# --- the sentence ------------------------------------------------------------------------------


def _reason(situation: Situation, chosen: Candidate, notes: list[str]) -> str:
    profile, limits = situation.profile, situation.limits
    count = f"{situation.n_items} items" if situation.n_items is not None else "an iterator"
    cost = f"a call takes {duration_text(profile.seconds_per_item)}"
    if profile.cpu_ratio < 0.5:
        cost += f", {1 - profile.cpu_ratio:.0%} of it waiting"
    elif profile.runs_own_threads:
        cost += f", running {profile.cpu_ratio:.1f} CPUs' worth of its own threads"
    if chosen.backend == "serial":
        head = f"Serial: {cost} over {count}, and no parallel plan pays for its overhead"
    elif chosen.backend == "threads":
        head = f"{_describe(chosen).capitalize()}: {cost} over {count}"
    else:
        head = (
            f"{_describe(chosen).capitalize()}: {cost} over {count}; "
            f"{limits.cpus} CPUs from {limits.cpus_source}"
        )
    tail = "; ".join(notes)
    return f"{head}{'; ' + tail if tail else ''}."


def _describe(candidate: Candidate) -> str:
    if candidate.backend == "serial":
        return "serial"
    method = f" ({candidate.start_method})" if candidate.start_method else ""
    return f"{candidate.backend}{method} x{candidate.n_jobs} in chunks of {candidate.chunksize}"


def duration_text(seconds: float) -> str:
    """Seconds as a person reads them: 1.25 s, 6.0 ms, 0.1 µs."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}"
        count /= 1024
    return f"{count:.0f} TiB"
