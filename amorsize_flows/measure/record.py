"""What a map run really cost, as the RunRecord the next scheduled run starts from."""

from __future__ import annotations

from dataclasses import replace

from ..data.plan import Plan, RunRecord
from .limits import WorkerLimits
from .profile import Profile
from .run_stats import RunStats

__all__ = ["build_record"]


def _serial_cost_per_call(
    plan: Plan, profile: Profile | None, stats: RunStats
) -> tuple[float, float]:
    """Wall and CPU seconds of a call in this map, as a serial run would pay them.

    A busy call on a thread is priced from the thread's CPU clock over the dry run's CPU ratio,
    not the wall clock, which runs on while the thread waits for a CPU or the GIL; not for calls
    that mostly wait (their CPU is noise) nor for calls with threads of their own (BLAS), which
    the calling thread's clock does not see. Elsewhere, as in the dry run, waits for a CPU count
    as CPU time (docs/decisions.md#records-as-evidence).
    """
    per_item = stats.compute_seconds / stats.items
    if (
        plan.backend == "threads"
        and profile is not None
        and profile.busy
        and not profile.runs_own_threads
    ):
        cpu_per_item = stats.cpu_seconds / stats.items
        return min(per_item, cpu_per_item / profile.cpu_ratio), cpu_per_item
    return per_item, per_item * stats.cpu_ratio


# A figure no run has measured again fades by this factor per run: one noisy run must not keep a
# stage off its workers for good. (docs/decisions.md#what-the-model-does-not-see)
UNMODELLED_FADE = 0.5


def _unmodelled_process_seconds(plan: Plan, map_seconds: float) -> float:
    """What a process map took beyond its prediction (counted again next time), or the plan's
    own figure, faded, where this run cannot tell: it ran no processes, or not as priced."""
    if plan.backend == "processes":
        for candidate in plan.candidates:
            if (candidate.backend, candidate.n_jobs, candidate.chunksize) == (
                plan.backend,
                plan.n_jobs,
                plan.chunksize,
            ):
                modelled = candidate.predicted_seconds - plan.unmodelled_process_seconds
                return max(0.0, map_seconds - modelled)
    return UNMODELLED_FADE * plan.unmodelled_process_seconds


def build_record(
    plan: Plan,
    profile: Profile | None,
    limits: WorkerLimits,
    stats: RunStats,
    *,
    wall: float,
    sampled: int,
    sample_seconds: float,
) -> RunRecord:
    """The record of a map run with ``plan``: ``profile`` is the dry run's (None when the plan
    was given or came from a record), ``stats`` what the runner measured, ``wall`` the seconds
    from the call to the last result, ``sampled`` and ``sample_seconds`` the dry run's items and
    time. Per-call costs are the run's own where it ran any items after the dry run."""
    profile = profile or (Profile.from_dict(plan.profile) if plan.profile else None)
    n_items = sampled + stats.items
    if stats.items:
        per_item, cpu_per_item = _serial_cost_per_call(plan, profile, stats)
    elif profile is not None:
        per_item, cpu_per_item = profile.seconds_per_item, profile.cpu_seconds_per_item
    else:
        per_item = cpu_per_item = 0.0
    if profile is not None and sample_seconds > 0:
        serial = profile.first_call_seconds + max(0, n_items - 1) * per_item
    else:
        serial = (profile.warmup_seconds if profile else 0.0) + n_items * per_item
    corrected = (
        replace(
            profile,
            seconds_per_item=per_item,
            cpu_seconds_per_item=cpu_per_item,
            # The workers' peaks teach the next run what a call needs: a chunk's is an upper bound.
            item_memory_bytes=max(profile.item_memory_bytes, stats.peak_chunk_bytes),
        ).to_dict()
        if profile is not None
        else {}
    )
    map_seconds = max(0.0, stats.finished_at - stats.started_at)
    return RunRecord(
        function=plan.function,
        function_digest=plan.function_digest,
        n_items=n_items,
        backend=plan.backend,
        n_jobs=plan.n_jobs,
        chunksize=plan.chunksize,
        start_method=plan.start_method,
        source=plan.source,
        wall_seconds=wall,
        sample_seconds=sample_seconds,
        map_seconds=map_seconds,
        startup_seconds=stats.startup_seconds,
        sampled_items=sampled,
        seconds_per_item=per_item,
        cpu_seconds_per_item=cpu_per_item,
        serial_seconds_estimate=serial,
        achieved_speedup=serial / wall if wall > 0 else 0.0,
        estimated_speedup=plan.estimated_speedup,
        peak_memory_bytes=stats.peak_chunk_bytes,
        unmodelled_process_seconds=_unmodelled_process_seconds(plan, map_seconds),
        limits=limits.to_dict(),
        profile=corrected,
    )
