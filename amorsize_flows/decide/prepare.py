"""A map made ready to run, by one of three paths: a plan the caller gave, a previous run's
record that still fits, or a dry run of the first items.

Each path ends in a :class:`Prepared`: the plan, the limits it was made under, the dry run's
results (kept, never computed twice) and the items left to map.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field, replace
from typing import Any

from ..data.options import Options
from ..data.plan import Plan
from ..measure.calibration import get_calibration
from ..measure.dry_run import Sample, probes_would_run, sample
from ..measure.identity import function_identity
from ..measure.limits import OTHER_WORK_MIN_SECONDS, WorkerLimits, less_other_work
from ..measure.profile import Batch, Profile
from ..probes import blas_pools
from ..probes.other_work import OtherWork
from ..probes.processes import fork_is_safe
from .decision import Identity, decide, decide_within, fit_to_limits, read_limits
from .history import min_gain, observed_startup, usable_history
from .situation import FREE, Constraints, Situation, max_threads

__all__ = ["Prepared", "prepare"]

log = logging.getLogger(__name__)

# Below this much work left, no pool can save the model's minimum gain (starting even two
# threads costs more), so the machine need not be measured. (docs/decisions.md#trivial-maps)
TRIVIAL_SECONDS = 1e-3
# A parallel plan estimated to beat serial by less than DOUBT_SPEEDUP, from fewer steady calls
# than DOUBT_STEADY_CALLS, rests on too little: the dry run goes on, within DOUBT_SHARE of the
# items, and the model decides again. (docs/decisions.md#a-plan-in-doubt)
DOUBT_SPEEDUP = 1.5
DOUBT_STEADY_CALLS = 8
DOUBT_SHARE = 0.1


@dataclass
class Prepared:
    """A map ready to run: its plan, the limits, the dry run's results and the items left."""

    plan: Plan
    limits: WorkerLimits
    rest: Iterator[Any]
    n_items: int | None
    options: Options
    results: list[Any] = field(default_factory=list)
    profile: Profile | None = None
    sample_seconds: float = 0.0
    # What the model chose from, where it was free to choose (no plan or setting was fixed).
    situation: Situation | None = None
    # The dry run's calls along the input, at what each stretch cost (Sample.batches).
    sampled: list[Batch] = field(default_factory=list)


@dataclass(frozen=True)
class _Request:
    """One call's function, options and the facts every path decides from."""

    func: Callable[[Any], Any]
    identity: Identity
    options: Options
    constraints: Constraints
    limits: WorkerLimits
    fork_safe: bool

    @property
    def processes_possible(self) -> bool:
        return self.limits.cpus > 1 and not self.limits.in_pool_worker

    def free(self, situation: Situation) -> Situation | None:
        """``situation``, where the model was free to choose in it."""
        return situation if self.constraints.free else None


def prepare(
    func: Callable[[Any], Any], items: Iterable[Any], options: Options, plan: Plan | None = None
) -> Prepared:
    """Plan the map of ``func`` over ``items``: from ``plan``, a record, or a dry run."""
    identity = function_identity(func)
    if plan is not None:
        return _from_plan(plan, items, options, identity)
    # Limits only take parallelism away: a sized map that is serial under the affinity and the
    # physical memory is serial under any quota (docs/decisions.md#limits-read-as-an-upper-bound).
    # An iterator reads items ahead within the real memory: it reads every limit first.
    request = _Request(
        func,
        identity,
        options,
        Constraints(options.backend, options.n_jobs, options.chunksize),
        read_limits(options, upper_bound=isinstance(items, Sized)),
        fork_is_safe(),
    )
    if options.history is not None:
        n_items = _length(items)
        profile, why, items = usable_history(
            options.history,
            identity,
            items,
            processes_possible=request.processes_possible,
            fork_possible=request.fork_safe,
            probes_fit=probes_would_run(n_items, request.limits.cpus),
        )
        if profile is not None:
            return _from_record(request, profile, why, items, n_items)
        log.info(
            "amorsize: %s: the previous run's record does not fit (%s); sampling", identity[0], why
        )
    return _from_dry_run(request, items)


def _from_plan(plan: Plan, items: Iterable[Any], options: Options, identity: Identity) -> Prepared:
    limits = read_limits(options)
    plan = fit_to_limits(plan, limits)
    if not plan.function:
        plan = plan.with_changes(function=identity[0], function_digest=identity[1])
    return Prepared(plan, limits, iter(items), _length(items), options)


def _from_record(
    request: _Request, profile: Profile, why: str, items: Iterable[Any], n_items: int | None
) -> Prepared:
    record = request.options.history
    assert record is not None
    situation = Situation(
        profile,
        request.limits,
        get_calibration(),
        n_remaining=n_items if n_items is not None else record.n_items,
        n_items=n_items,
        parent_warm=False,
        fork_safe=request.fork_safe,
        observed_startup=observed_startup(record),
        unmodelled_process_seconds=record.unmodelled_process_seconds,
        min_gain=min_gain(record),
    )
    situation, made = decide_within(
        request.func,
        situation,
        request.constraints,
        request.identity,
        request.options,
        source="history",
    )
    log.info("amorsize: %s: dry run skipped, %s; %s", request.identity[0], why, made.summary())
    return Prepared(
        made,
        situation.limits,
        iter(items),
        n_items,
        request.options,
        profile=profile,
        situation=request.free(situation),
    )


def _from_dry_run(request: _Request, items: Iterable[Any]) -> Prepared:
    others = OtherWork()
    waited = blas_pools.settle()  # a BLAS pool spinning after earlier work is not the function's
    if waited:
        log.debug("amorsize: waited %.3fs for native threads to leave the CPUs", waited)
    dry = sample(
        request.func,
        items,
        sample_size=request.options.sample_size,
        parallelism=(request.limits.cpus, max_threads(request.limits)),
        processes_possible=request.processes_possible,
        fork_possible=request.fork_safe,
        memory_bytes=request.limits.memory_bytes,
    )
    busy_cpus = others.busy_cpus(OTHER_WORK_MIN_SECONDS)
    limits = less_other_work(request.limits, busy_cpus)
    n_remaining = _remaining(dry)
    trivial = (
        request.constraints.free and n_remaining * dry.profile.seconds_per_item < TRIVIAL_SECONDS
    )
    situation = Situation(
        dry.profile,
        limits,
        None if trivial else get_calibration(),
        n_remaining=n_remaining,
        n_items=dry.n_items,
        spent_seconds=dry.profile.sample_seconds,
        fork_safe=request.fork_safe,
    )
    situation, made = decide_within(
        request.func,
        situation,
        request.constraints,
        request.identity,
        request.options,
        busy_cpus=busy_cpus,
    )
    if request.constraints.free and _in_doubt(made, dry):
        situation, made = _sample_on(request, dry, situation, made)
    if situation.n_remaining == 0:
        made = made.with_changes(reason=f"Serial: all {len(dry.results)} items ran in the dry run.")
    log.info(
        "amorsize: %s: dry run of %d items in %.3fs; %s",
        request.identity[0],
        len(dry.results),
        dry.profile.sample_seconds,
        made.summary(),
    )
    return Prepared(
        made,
        situation.limits,
        dry.rest,
        dry.n_items,
        request.options,
        results=dry.results,
        profile=dry.profile,
        sample_seconds=dry.profile.sample_seconds,
        situation=request.free(situation),
        sampled=dry.batches(),
    )


def _in_doubt(made: Plan, dry: Sample) -> bool:
    """Whether a parallel plan's small gain rests on too few calls (DOUBT_SPEEDUP)."""
    return (
        made.backend != "serial"
        and made.estimated_speedup < DOUBT_SPEEDUP
        and dry.steady_calls < DOUBT_STEADY_CALLS
        and _calls_to_settle(dry) > 0
    )


def _sample_on(
    request: _Request, dry: Sample, situation: Situation, doubted: Plan
) -> tuple[Situation, Plan]:
    """Run more of the dry run for a plan in doubt, and decide again from all its calls."""
    steady_before = dry.steady_calls
    if not dry.extend(_calls_to_settle(dry)):
        return situation, doubted
    situation = replace(
        situation,
        profile=dry.profile,
        n_remaining=_remaining(dry),
        n_items=dry.n_items,
        spent_seconds=dry.profile.sample_seconds,
    )
    made = decide(request.func, situation, FREE, request.identity)
    log.info(
        "amorsize: %s: %s was in doubt after %d steady calls; from %d: %s",
        request.identity[0],
        doubted.summary(),
        steady_before,
        dry.steady_calls,
        made.summary(),
    )
    return situation, made


def _calls_to_settle(dry: Sample) -> int:
    """More calls for a plan in doubt: up to DOUBT_STEADY_CALLS, within DOUBT_SHARE of the items."""
    room = int(DOUBT_SHARE * _known_items(dry)) - len(dry.results)
    return max(0, min(DOUBT_STEADY_CALLS - dry.steady_calls, room))


def _remaining(dry: Sample) -> int:
    """Items left to map after the dry run (at least, for an iterator of unknown length)."""
    return _known_items(dry) - len(dry.results)


def _known_items(dry: Sample) -> int:
    return dry.n_items if dry.n_items is not None else dry.n_items_lower_bound


def _length(items: Iterable[Any]) -> int | None:
    return len(items) if isinstance(items, Sized) else None
