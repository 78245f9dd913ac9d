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

from ..data.plan import Candidate, Plan
from . import costs
from .situation import FREE, Constraints, Situation, max_threads

__all__ = ["choose", "duration_text"]

# Chunks per worker a plan gets where they are cheap: variation along the input averages out only
# across chunks. (docs/decisions.md#chunk-sizes)
MIN_CHUNKS_PER_WORKER = 4
# ... bought when the model predicts them at most this much slower than the best chunk size.
BALANCE_PREMIUM = 0.02


def choose(
    situation: Situation,
    constraints: Constraints = FREE,
    *,
    function: tuple[str, str] = ("", ""),
    source: str = "sampled",
) -> Plan:
    """The cheapest plan for ``situation`` within ``constraints``, with every candidate weighed."""
    notes: list[str] = []
    serial = Candidate("serial", 1, max(1, situation.n_remaining), costs.serial_seconds(situation))
    candidates = [serial]
    backends = _allowed_backends(situation, constraints, notes)
    if situation.n_remaining > 1 and situation.calibration is not None:
        for backend in ("threads", "processes"):
            if backend not in backends:
                continue
            if constraints.free and costs.cannot_win(situation, backend, serial.predicted_seconds):
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
        unmodelled_process_seconds=situation.unmodelled_process_seconds,
    )


# --- which backends, which sizes -------------------------------------------------------------


def _allowed_backends(situation: Situation, constraints: Constraints, notes: list[str]) -> set[str]:
    allowed = {"threads", "processes"}
    if constraints.backend is not None:
        allowed &= {constraints.backend}
    if "processes" in allowed:
        if situation.limits.in_pool_worker:
            allowed.discard("processes")
            notes.append("inside another map's worker process no process pool can start")
        elif not situation.profile.picklable:
            allowed.discard("processes")
            notes.append(f"processes are out: {situation.profile.not_picklable_reason}")
        elif situation.limits.cpus < 2 and constraints.backend != "processes":
            allowed.discard("processes")
    return allowed


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
            if not costs.fits_in_memory(situation, backend, n_workers, chunksize):
                memory_capped = True
                continue
            if backend == "threads":
                options.append(costs.threads(situation, n_workers, chunksize))
            else:
                options.append(costs.processes(situation, n_workers, chunksize))
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
    unmodelled = situation.unmodelled_process_seconds
    if unmodelled > 0:
        notes.append(
            f"processes counted {duration_text(unmodelled)} more, what this stage's last process "
            "map took beyond the model"
        )
    elif chosen.backend == "processes" and situation.observed_startup is None:
        # The calibration ran in a small process; a large caller (an Airflow task) forks slower.
        notes.append(
            "the workers' start and hand-offs are the machine's calibrated costs, not yet "
            "measured from this process; the run records them"
        )
    if chosen.backend == "processes" and limits.daemonic:
        notes.append(
            "in a daemonic process (a Celery or Dask worker) the workers start all the same, and "
            "are killed on every way out and with it"
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
