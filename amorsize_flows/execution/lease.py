"""A node-wide lease of worker slots: the maps of this package on one node (in any process, under
any orchestrator) share its CPUs instead of each planning for all of them.

The node has one slot a CPU (its affinity, under any cgroup quota). A map holds a slot for each
CPU its plan keeps busy, its caller's for a serial plan, from the start of the map to its end.
A map that finds every slot taken starts serially at idle priority and takes slots as they free
(a plan the caller fixed waits for one); one that gets fewer slots than its plan wanted is
planned again within them. Quick maps take no slot (waiting could cost them more than sharing a
CPU for so short a while) but plan within those free. A map inside another map (called by a
mapped function, in a worker or in the caller's thread while the outer map holds slots) never
waits: the slots it would wait for may be its outer map's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from dataclasses import replace

from ..data.errors import MapCancelledError
from ..data.plan import Plan
from ..decide.situation import Situation
from ..measure.limits import WorkerLimits, detect
from ..probes.idle_priority import IdlePriority
from ..probes.lock_files import SlotFiles, runtime_dir
from ..probes.procfs import usable_cpus
from .nesting import in_a_map, inside_a_map

__all__ = ["SHARE_NODE_ENV", "WorkerLease", "slots_needed"]

log = logging.getLogger(__name__)

SHARE_NODE_ENV = "AMORSIZE_SHARE_NODE"  # "0" plans every map as if it were alone on the node
# A map predicted to take less than this takes no slot. (docs/decisions.md#a-node-shared-by-several-maps)
LEASE_MIN_SECONDS = 0.5
# A map waiting for its first slot tries again this often.
LEASE_POLL_SECONDS = 0.05
# Calls this busy keep a CPU per thread; below, threads mostly wait and take no slot.
BUSY_THREADS_RATIO = 0.5


class WorkerLease:
    """The slots one map holds; a context manager that lets them all go at the end."""

    def __init__(self, cancel: threading.Event | None = None) -> None:
        self._cancel = cancel
        self._slots: SlotFiles | None = None
        self._node_cpus: int | None = None
        self._nested = False
        self._marking = contextlib.ExitStack()
        self._looked_at = 0.0  # when freed_up last looked at the slots (monotonic)
        self._idle = IdlePriority()
        self.waited_seconds = 0.0
        self.short = False  # granted fewer slots than the plan needed

    def __enter__(self) -> WorkerLease:
        self._nested = inside_a_map()
        self._marking.enter_context(in_a_map())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._marking.close()
        self._idle.restore()
        if self._slots is not None:
            self._slots.release()

    @property
    def held(self) -> int:
        return self._slots.held if self._slots is not None else 0

    def grant(self, plan: Plan, start_idle: bool = False) -> int | None:
        """Take the slots ``plan`` needs; return how many it got, or None where the plan runs
        outside the lease (quick, or sharing is off). Where every slot is taken, wait for one;
        or, with ``start_idle``, get none and run on at idle priority until one frees
        (:meth:`freed_up`) (docs/decisions.md#a-node-shared-by-several-maps)."""
        needed = slots_needed(plan)
        if needed == 0 or not self._sharing(plan):
            return None
        slots = self._open()
        if slots is None:
            return None
        if slots.take(needed) == 0 and not self._nested:
            if start_idle and self._idle.lower():
                log.info("amorsize: %s: every worker slot is taken; starting idle", plan.function)
            else:
                self.wait(plan)
        self.short = slots.held < needed
        return slots.held

    def room(self, plan: Plan) -> int | None:
        """For a quick parallel plan, which takes no slot: how many slots are free now, where
        other maps hold some, to plan within (it need not wait, but should not crowd them);
        else None."""
        needed = slots_needed(plan)
        if needed <= 1 or self._nested or not _shares_node():
            return None
        slots = self._open()
        if slots is None:
            return None
        free = slots.free()
        return free if free < slots.count else None  # all free: the plan was made for the node

    def wait(self, plan: Plan) -> None:
        """Wait until a slot is free and take it (up to what ``plan`` needs)."""
        slots = self._open()
        assert slots is not None
        started = time.monotonic()
        self._idle.restore()
        log.info("amorsize: %s: every worker slot of the node is taken; waiting", plan.function)
        while slots.take(slots_needed(plan)) == 0:
            if self._cancel is not None and self._cancel.is_set():
                raise MapCancelledError("the map was cancelled while it waited for a slot")
            time.sleep(LEASE_POLL_SECONDS)
        self.waited_seconds += time.monotonic() - started

    @property
    def idle(self) -> bool:
        """Whether the map runs at idle priority, holding no slot."""
        return self._idle.lowered

    def freed_up(self) -> bool:
        """Whether a slot is free now, for a map that was granted fewer than it needed; looks
        at most every LEASE_POLL_SECONDS."""
        now = time.monotonic()
        if self._slots is None or now - self._looked_at < LEASE_POLL_SECONDS:
            return False
        self._looked_at = now
        return self._slots.free() > 0

    def more(self, wanted: int) -> int:
        """Take free slots, without waiting, until ``wanted`` are held; return how many are."""
        slots = self._open()
        if slots is None:
            return wanted
        held = slots.take(wanted)
        if held:
            self._idle.restore()  # a slot of its own: normal priority again
        return held

    def winding_down(self, busy: int) -> None:
        """Let the slots of workers that have no chunk left go, for a waiting map to start on.
        (docs/decisions.md#a-node-shared-by-several-maps)"""
        if self._slots is not None and busy < self._slots.held:
            self.keep(max(busy, 1))

    def keep(self, count: int) -> None:
        """Let the slots beyond ``count`` go (a plan made within them needed fewer)."""
        if self._slots is not None:
            self._slots.keep(count)

    def limit(self, limits: WorkerLimits, granted: int) -> WorkerLimits:
        """``limits`` with the CPUs capped to the slots granted, saying so."""
        if granted >= limits.cpus:
            return limits
        source = f"node lease ({granted} of {self._count()} worker slots free)"
        return replace(limits, cpus=granted, cpus_source=source)

    def within(self, situation: Situation) -> Situation:
        """``situation`` with its CPUs capped to the slots this map holds or can take now."""
        if self._slots is None and not self._sharing(None):
            return situation
        granted = self.more(situation.limits.cpus)
        return replace(situation, limits=self.limit(situation.limits, max(1, granted)))

    def _sharing(self, plan: Plan | None) -> bool:
        if not _shares_node():
            return False
        # A plan with no prediction (fixed, stored) shares the node; a quick one does not.
        return (
            plan is None
            or not plan.predicted_seconds
            or plan.predicted_seconds >= (LEASE_MIN_SECONDS)
        )

    def _open(self) -> SlotFiles | None:
        if self._slots is None:
            slots = SlotFiles(runtime_dir(), self._count())
            if not slots.available:
                return None
            self._slots = slots
        return self._slots

    def _count(self) -> int:
        """The node's CPUs as this container has them: its affinity, under any quota."""
        if self._node_cpus is None:
            quota, cpus = detect().cpu_quota, usable_cpus()
            self._node_cpus = max(1, min(cpus, math.ceil(quota))) if quota else cpus
        return self._node_cpus


def _shares_node() -> bool:
    return os.environ.get(SHARE_NODE_ENV, "1").strip() != "0"


def slots_needed(plan: Plan) -> int:
    """The CPUs a plan keeps busy: the caller's for serial, one a process, one a busy thread."""
    if plan.backend == "serial":
        return 1
    if plan.backend == "processes":
        return plan.n_jobs
    profile = plan.profile
    seconds = profile.get("seconds_per_item", 0.0)
    busy = not seconds or profile.get("cpu_seconds_per_item", 0.0) / seconds >= BUSY_THREADS_RATIO
    return plan.n_jobs if busy else 0
