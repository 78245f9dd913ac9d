"""The results of a map, lazily and in input order, with its plan and, once done, its record.

:class:`MapIterator` runs a :class:`~..decide.prepare.Prepared` map: the dry run's results first,
then the runner's, a serial plan weighed again while it runs (``decide.replan``), signals turned
into a clean stop, and the :class:`RunRecord` built once the last result is out.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..data.plan import Plan, RunRecord
from ..decide.decision import decide, read_limits
from ..decide.prepare import Prepared
from ..decide.replan import SerialReplanner
from ..decide.situation import FREE, Situation
from ..measure.limits import WorkerLimits
from ..measure.profile import Profile
from ..measure.run_stats import RunStats
from .lease import WorkerLease, slots_needed
from .progress import Progress, progress_reporter
from .runner import Replanner, run_plan
from .signals import signals_stop_the_map

__all__ = ["MapIterator", "MapRun"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapRun:
    """The outcome of :func:`run`: the results in input order, the plan, and what it cost."""

    results: list[Any]
    plan: Plan
    _iterator: MapIterator = field(repr=False, compare=False)

    @property
    def record(self) -> RunRecord:
        """What the run really cost, built on first use (``execute`` never needs it)."""
        record = self._iterator.record
        assert record is not None  # the iterator was exhausted to get the results
        return record


class MapIterator(Iterator[Any]):
    """Results in input order, computed lazily; ``plan`` now (replaced where the node's worker
    slots allowed fewer workers, or a serial plan is re-planned), ``record`` once exhausted."""

    def __init__(
        self,
        func: Callable[[Any], Any],
        prepared: Prepared,
        started: float,
        progress: Progress,
        cancel: threading.Event | None,
    ) -> None:
        self.plan = prepared.plan
        self._func = func
        self._prepared = prepared
        self._started = started
        self._stats = RunStats()
        self._progress = progress
        self._cancel = cancel
        self._sampled = len(prepared.results)
        self._wall_seconds: float | None = None  # set when the last result is out
        self._record: RunRecord | None = None
        self._node_limits: WorkerLimits | None = None  # the limits before the lease capped them
        self._chunks = self._generate()
        self._results = itertools.chain.from_iterable(self._chunks)

    @property
    def record(self) -> RunRecord | None:
        """What the run really cost; None until the iterator is exhausted.

        Built on first use: a plain ``execute`` never asks.
        """
        if self._record is None and self._wall_seconds is not None:
            from ..measure.record import build_record  # execute() never asks for it

            prepared = self._prepared
            self._record = build_record(
                self.plan,
                prepared.profile,
                prepared.limits,
                self._stats,
                wall=self._wall_seconds,
                sampled=self._sampled,
                sample_seconds=prepared.sample_seconds,
            )
        return self._record

    def __next__(self) -> Any:
        return next(self._results)

    def chunks(self) -> Iterator[list[Any]]:
        """The results a chunk at a time (what :func:`run` extends its list with)."""
        return self._chunks

    def close(self) -> None:
        """Stop the map now; workers are killed, pending items are dropped."""
        self._chunks.close()

    def _within_lease(self, lease: WorkerLease) -> None:
        """Take the node's worker slots the plan needs, and plan again within fewer."""
        wanted, prepared = self.plan, self._prepared
        # Only a serial plan the model made can start on idle time: its re-planner takes the
        # slots once they free.
        may_idle = prepared.situation is not None and prepared.n_items is not None
        granted = lease.grant(wanted, start_idle=may_idle)
        if granted is None:
            # A quick map the model planned: within the slots free, holding none. (A plan the
            # caller fixed is the caller's.)
            room = lease.room(wanted) if prepared.situation is not None else None
            if room is not None and room < slots_needed(wanted):
                self.plan = self._plan_within(lease, wanted, max(1, room))
            return
        plan = wanted
        if granted < slots_needed(wanted):
            plan = self._plan_within(lease, wanted, max(1, granted))
            if lease.idle and plan.backend != "serial":
                lease.wait(wanted)
                plan = self._plan_within(lease, wanted, lease.held)
            if lease.idle:
                plan = plan.with_changes(
                    reason=f"{plan.reason} Every worker slot of the node was taken: it runs at "
                    "idle priority until one frees."
                )
            lease.keep(slots_needed(plan))
            log.info(
                "amorsize: %s: within the node's free worker slots: %s", plan.function, plan.reason
            )
        if lease.waited_seconds:
            plan = plan.with_changes(
                reason=f"{plan.reason} Waited {lease.waited_seconds:.1f} s for a worker slot."
            )
        self.plan = plan

    def _plan_within(self, lease: WorkerLease, plan: Plan, granted: int) -> Plan:
        """``plan`` made again for ``granted`` CPUs, by the model where it chose."""
        prepared = self._prepared
        if granted >= slots_needed(plan):
            return plan
        if prepared.situation is not None:
            self._node_limits = self._node_limits or prepared.situation.limits
            limits = lease.limit(self._node_limits, granted)
            prepared.situation = replace(prepared.situation, limits=limits)
            return decide(self._func, prepared.situation, FREE, _identity(plan), plan.source)
        if plan.backend != "serial":
            return plan.with_changes(n_jobs=granted)
        return plan

    def _replanner(self, stack: contextlib.ExitStack, lease: WorkerLease) -> Replanner | None:
        """For a serial plan the model chose, the :class:`SerialReplanner` that may switch it."""
        prepared = self._prepared
        if self.plan.backend != "serial" or prepared.situation is None or prepared.n_items is None:
            return None
        identity, source = _identity(self.plan), self.plan.source

        def decide_later(later: Situation) -> Plan:
            if later.limits.upper_bound:  # a parallel plan is made under every limit
                later = replace(later, limits=read_limits(prepared.options))
            elif self._node_limits is not None:  # capped to the slots it got: all may be free
                later = replace(later, limits=self._node_limits)
            # The evidence is still the dry run's or the record's, with the batches since.
            plan = decide(self._func, lease.within(later), FREE, identity, source)
            if plan.backend == "serial":
                lease.keep(1)  # the slots within() took for it
            return plan

        def adopt(plan: Plan) -> None:
            lease.keep(slots_needed(plan))
            stack.enter_context(signals_stop_the_map(plan.backend == "processes", self._cancel))
            self.plan = plan

        return SerialReplanner(
            prepared.situation,
            prepared.n_items,
            prepared.sampled,
            self._stats,
            self._started,
            decide_later,
            adopt,
            cpus=lease if lease.short else None,
        )

    def _generate(self) -> Generator[list[Any], None, None]:
        prepared = self._prepared
        done = self._sampled
        with contextlib.ExitStack() as stack:
            lease = stack.enter_context(WorkerLease(self._cancel))
            self._within_lease(lease)
            on_chunk = stack.enter_context(
                progress_reporter(self._progress, prepared.n_items, done)
            )
            processes = self.plan.backend == "processes"
            # Where the caller gave no event, one of the map's own, for a signal to set (see
            # signals_stop_the_map); serial maps go without: a cancel event makes them poll.
            cancel = threading.Event() if processes and self._cancel is None else self._cancel
            stack.enter_context(signals_stop_the_map(processes, cancel))
            dry_results, prepared.results = prepared.results, []  # keep memory bounded
            if self.plan.backend != "serial":
                yield dry_results
                dry_results = []
            # A serial map extends the dry run's results in place: a long cheap map's results
            # are not copied from one list to another.
            yield from run_plan(
                self.plan,
                self._func,
                prepared.rest,
                start_index=done,
                stats=self._stats,
                cancel=cancel,
                on_chunk=on_chunk,
                cpus=prepared.limits.cpus,
                into=dry_results,
                replan=self._replanner(stack, lease),
                cap_loaded_pools=_may_run_own_threads(prepared.profile),
                winding_down=lease.winding_down,
            )
        self._wall_seconds = time.perf_counter() - self._started
        if log.isEnabledFor(logging.INFO):
            record = self.record
            assert record is not None
            log.info(
                "amorsize: %s: %d items in %.3fs, achieved speedup %.2fx (estimated %.2fx)",
                self.plan.function,
                record.n_items,
                record.wall_seconds,
                record.achieved_speedup,
                self.plan.estimated_speedup,
            )


def _identity(plan: Plan) -> tuple[str, str]:
    return plan.function, plan.function_digest


def _may_run_own_threads(profile: Profile | None) -> bool:
    """Whether the function may run BLAS/OpenMP threads of its own: unknown without a profile."""
    return profile is None or profile.runs_own_threads
