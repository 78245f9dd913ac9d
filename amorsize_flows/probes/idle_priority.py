"""The calling thread's CPU scheduling policy, lowered to idle and back (Linux ``SCHED_IDLE``).

A thread at idle priority runs only on CPU time that no other thread of the node wants: a map
that found every worker slot taken works on while it waits, without slowing the maps holding
them. An unprivileged thread may go back from ``SCHED_IDLE`` to the normal policy (Linux 2.6.39
and later), so the lowering is undone when the map gets a slot or ends.
"""

from __future__ import annotations

import os

__all__ = ["IdlePriority"]


class IdlePriority:
    """Lowers the calling thread to idle priority on :meth:`lower`, restores it on
    :meth:`restore` (from the same thread); a no-op where the policy cannot be changed."""

    def __init__(self) -> None:
        self._previous: tuple[int, os.sched_param] | None = None

    @property
    def lowered(self) -> bool:
        return self._previous is not None

    def lower(self) -> bool:
        """Lower the calling thread; return whether it is now at idle priority."""
        if self._previous is not None or not hasattr(os, "SCHED_IDLE"):
            return self._previous is not None
        try:
            previous = (os.sched_getscheduler(0), os.sched_getparam(0))
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            return False
        self._previous = previous
        return True

    def restore(self) -> None:
        if self._previous is None:
            return
        policy, param = self._previous
        self._previous = None
        try:
            os.sched_setscheduler(0, policy, param)
        except OSError:  # a policy this thread may not take back (real-time, unprivileged)
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
