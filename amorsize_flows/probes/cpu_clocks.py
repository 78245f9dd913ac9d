"""CPU time of a function's calls: the calling thread's and the threads it uses, not the rest.

The dry run divides a call's CPU time by its wall time to tell waiting (I/O) from running threads
of its own (BLAS, OpenMP). The process clock would count an orchestrator's other Python threads
too, and Linux brings another running thread's time into it only at a tick.
"""

from __future__ import annotations

import threading
import time

from .blas_pools import native_thread_ids

__all__ = ["FunctionClock"]

# Linux's clock id of a thread's CPU time, with the thread's id shifted above it:
# CPUCLOCK_PERTHREAD_MASK | CPUCLOCK_SCHED in the kernel's posix-timers.h.
_CPUCLOCK_THREAD_SCHED = 6


class FunctionClock:
    """CPU seconds of the calling thread and of every thread but the other Python threads that
    ran before the calls (an orchestrator's engine runs there, and its CPU is not the
    function's): the BLAS and OpenMP pools a call keeps busy, and the threads a call starts
    (joblib's threading backend, which scikit-learn uses for ``n_jobs``), even once they ended.

    Linux adds another running thread's CPU to the process clock only at a scheduler tick, but
    brings a thread's own clock up to date when it is read (docs/decisions.md#cpu-ratio). So the
    clock is the process's, read right after each native thread's own clock, less what each of
    the other Python threads seen at the start ran meanwhile (read on their own clocks first).
    """

    def __init__(self) -> None:
        self._natives: list[str] = []
        self._others_start: dict[str, float] = {}  # the other Python threads' clocks at start
        self._list_natives = True
        self._own = 0.0

    def start(self, *, native_threads: bool = True) -> None:
        """Start counting; without ``native_threads``, leave out the native threads of a caller
        that is Python's only thread (their CPU then reaches the process clock at a tick)."""
        alone = threading.active_count() == 1
        caller = threading.get_native_id()
        # A thread that has not started running yet has no native id, nor any CPU time.
        python = {
            str(thread.native_id)
            for thread in threading.enumerate()
            if thread.native_id is not None
        }
        self._list_natives = native_threads or not alone
        natives = native_thread_ids(python) if self._list_natives else []
        self._natives = natives or []
        self._others_start = {task: _thread_seconds(task) for task in python if task != str(caller)}
        self._own = self._process_seconds()

    @property
    def sees_native_threads(self) -> bool:
        """Whether :meth:`start` found native threads."""
        return bool(self._natives)

    def seconds(self) -> float:
        """CPU seconds used since :meth:`start`."""
        others = sum(
            max(0.0, _thread_seconds(task) - started)
            for task, started in self._others_start.items()
        )
        return max(0.0, self._process_seconds() - self._own - others)

    def _process_seconds(self) -> float:
        natives = native_thread_ids() if self._list_natives else None
        for task in natives or self._natives:
            _thread_seconds(task)  # brings the process clock's share of it up to date
        return time.process_time()


def _thread_seconds(task: str) -> float:
    """The CPU seconds of this process's thread ``task`` (a native id) so far, up to date even
    while it runs; 0.0 once it has ended. Linux names a thread's CPU clock by its id
    (MAKE_THREAD_CPUCLOCK in the kernel's posix-timers.h, what glibc's pthread_getcpuclockid
    returns), and reading it settles the thread's pending CPU time first."""
    try:
        return time.clock_gettime(((~int(task)) << 3) | _CPUCLOCK_THREAD_SCHED)
    except OSError:
        return 0.0
