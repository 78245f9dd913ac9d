"""Weighing a serial plan again while it runs, when its calls prove far costlier than measured,
or when CPUs it could not have when it started free up.

The dry run sees the first few items. Where they were not typical (a skewed input whose rare slow
items it missed, an input sorted by size), the serial batches show it, and the rest of the map
may be worth a pool after all. A map that went serial because other maps held the node's worker
slots may likewise take them once they are let go.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from ..data.plan import Plan
from ..measure.calibration import get_calibration
from ..measure.profile import Batch
from ..measure.run_stats import RunStats
from ..probes.processes import fork_is_safe
from .model import duration_text
from .situation import MIN_GAIN, Situation
from .trend import RisingBatches

__all__ = ["CpuWatch", "SerialReplanner"]

log = logging.getLogger(__name__)

# A serial plan is weighed again once its calls take this many times what the dry run measured:
# the first items were not typical. (docs/decisions.md#re-planning-a-serial-map)
REPLAN_FACTOR = 4.0
# ... and again each time they slow down this many times more (an input sorted by size).
REPLAN_AGAIN = 2.0
# A batch shorter than this cannot show work worth a pool (none starts that fast), and its clock
# readings are mostly the batch's own bookkeeping.
REPLAN_MIN_SECONDS = 1e-3
# After a batch the alarm stopped, the calls after it run until they took this many times as
# long: then they tell a rare slow call from a step up. (docs/decisions.md#re-planning-a-serial-map)
CONFIRM_FACTOR = 2.0
# Serial calls planned at least this long are each followed by a clock reading, so that a batch
# whose calls prove slow is weighed at once instead of running on (Replanner.alarm).
WATCHED_CALL_SECONDS = 1e-5


class CpuWatch(Protocol):
    """Where a map got fewer CPUs than it wanted (other maps held the node's worker slots)."""

    @property
    def idle(self) -> bool:
        """Whether the map runs on idle time, with no CPU of its own."""

    def freed_up(self) -> bool:
        """Whether a CPU freed up since; cheap, and may be asked between every two batches."""


class SerialReplanner:
    """Weighs a serial plan the model chose again, once calls run REPLAN_FACTOR times slower than
    the dry run measured, or once ``cpus`` says CPUs freed up, from what the serial batches
    measured; a parallel plan it makes is handed to ``adopt`` and run instead."""

    def __init__(
        self,
        situation: Situation,
        n_items: int,
        dry_run: list[Batch],
        stats: RunStats,
        started: float,
        decide: Callable[[Situation], Plan],
        adopt: Callable[[Plan], None],
        cpus: CpuWatch | None = None,
    ) -> None:
        """``situation`` is the one the serial plan was made in, ``dry_run`` its calls along the
        input (Sample.batches), ``stats`` the serial batches' as they run, ``started`` when the
        map began (perf_counter); ``decide`` makes a plan for a later situation."""
        self._situation, self._n_items, self._stats = situation, n_items, stats
        self._started, self._decide, self._adopt = started, decide, adopt
        self._cpus = cpus
        self._sampled = sum(batch.items for batch in dry_run)
        self._planned = situation.profile.seconds_per_item
        self._threshold = REPLAN_FACTOR * self._planned
        first, *later = dry_run or [Batch(0, 0, self._planned)]
        self._batches = RisingBatches(first)
        for batch in later:
            self._batches.add(batch)
        # Every call measured so far, the dry run's included: how many, and their seconds.
        self._measured_items = sum(batch.items for batch in dry_run)
        self._measured_seconds = sum(batch.items * batch.seconds_per_item for batch in dry_run)
        # After a slow batch the alarm ended: how long it took (None otherwise), and the calls
        # and seconds of the batches since, which run until they took CONFIRM_FACTOR times as
        # long (see __call__).
        self._slow_batch_seconds: float | None = None
        self._confirm_items, self._confirm_seconds = 0, 0.0

    def alarm(self) -> tuple[float, float] | None:
        """Calls so slow that their batch is weighed at once (see Replanner.alarm); after a slow
        batch, the calls since then as soon as they took long enough to tell what it was."""
        if self._planned < WATCHED_CALL_SECONDS:
            return None
        if self._slow_batch_seconds is not None:
            return 0.0, CONFIRM_FACTOR * self._slow_batch_seconds - self._confirm_seconds
        return self._threshold, REPLAN_MIN_SECONDS

    def awaits_batch(self) -> bool:
        """Whether the calls after a slow batch are still being timed (see __call__)."""
        return self._slow_batch_seconds is not None

    def keeps_batches_short(self) -> bool:
        """Whether it watches for CPUs to free up: then every batch is a chance to take them."""
        return self._cpus is not None

    def __call__(self, done: int, batch_items: int, batch_seconds: float) -> Plan | None:
        situation = self._situation
        if done == batch_items and not self._sampled:
            # The process's first call, which a dry run would have timed apart: alone in its
            # batch it is all warm-up (a model loaded lazily), and says nothing of the rest.
            if batch_items == 1:
                return None
            batch_seconds = max(0.0, batch_seconds - situation.profile.warmup_seconds)
        if self._cpus is not None and self._cpus.idle:
            # A batch run on idle time was starved, not slow: it says nothing of the calls.
            return self._grow(done) if done < self._n_items and self._cpus.freed_up() else None
        seconds_per_item = batch_seconds / batch_items
        self._batches.add(Batch(done - batch_items, batch_items, seconds_per_item))
        self._measured_items += batch_items
        self._measured_seconds += batch_seconds
        if self._slow_batch_seconds is not None:
            self._confirm_items += batch_items
            self._confirm_seconds += batch_seconds
            if done >= self._n_items:
                return None
            if self._confirm_seconds < CONFIRM_FACTOR * self._slow_batch_seconds:
                return None
            self._slow_batch_seconds = None
            # Slow calls now and then: the mean of every call so far; slow calls from here
            # on: the mean of the calls since the slow batch.
            typical = self._measured_seconds / self._measured_items
            since = self._confirm_seconds / self._confirm_items
            return self._replan(done, max(typical, since))
        slow = seconds_per_item >= self._threshold and batch_seconds >= REPLAN_MIN_SECONDS
        if done >= self._n_items:
            return None
        if not slow:
            return self._grow(done) if self._cpus is not None and self._cpus.freed_up() else None
        self._threshold = REPLAN_AGAIN * seconds_per_item
        if self.alarm() is not None and not self._batches.rises_steadily():
            # The alarm ended the batch right after a slow call, so its mean reads high: the
            # calls after it tell a few rare slow calls from a step up along the input.
            self._slow_batch_seconds = batch_seconds
            self._confirm_items, self._confirm_seconds = 0, 0.0
            return None
        # Not the mean of all batches: where calls grow along the input (sorted by size),
        # the latest, and the trend, tell most about the rest.
        return self._replan(done, self._batches.rest_seconds_per_item(self._n_items))

    def _grow(self, done: int) -> Plan | None:
        """The plan for the rest now that CPUs freed up, from every call measured so far."""
        typical = self._measured_seconds / max(1, self._measured_items) or self._planned
        return self._replan(done, typical, why="CPUs freed up")

    def _replan(self, done: int, rest: float, why: str = "") -> Plan | None:
        """The plan for the items after ``done``, whose calls are expected to take ``rest``
        seconds each; None where serial stays best. ``why`` names a reason other than slow
        calls."""
        situation, stats = self._situation, self._stats
        # Calls this far from what the dry run saw vary at least as much as they cost.
        stdev = (
            situation.profile.seconds_stdev if why else max(situation.profile.seconds_stdev, rest)
        )
        profile = replace(
            situation.profile,
            seconds_per_item=rest,
            cpu_seconds_per_item=rest * stats.cpu_ratio,
            seconds_stdev=stdev,
        )
        later = replace(
            situation,
            profile=profile,
            calibration=situation.calibration or get_calibration(),
            n_remaining=self._n_items - done,
            spent_seconds=time.perf_counter() - self._started,
            parent_warm=True,  # the caller has run the function: forked workers inherit that
            fork_safe=fork_is_safe(),
            min_gain=MIN_GAIN,  # calls measured slower now, not a record's noise
        )
        plan = self._decide(later)
        if plan.backend == "serial":
            return None
        because = why or f"planned for {duration_text(self._planned)} a call"
        plan = plan.with_changes(reason=f"Re-planned after {done} items ({because}). {plan.reason}")
        log.info("amorsize: %s: %s", plan.function, plan.reason)
        self._adopt(plan)
        return plan
