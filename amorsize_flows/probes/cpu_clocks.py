"""CPU time of a function's calls: the calling thread's and its native threads', not the rest.

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
    """CPU seconds of the calling thread and of the process's native threads (the BLAS and
    OpenMP pools a call may keep busy), without the other Python threads: an orchestrator's
    engine runs there, and its CPU is not the function's.

    Linux adds another running thread's CPU to the process clock only at a scheduler tick, but
    brings a thread's own clock up to date when it is read (docs/decisions.md#cpu-ratio). Where
    the caller is Python's only thread, the clock is the process's, read right after each native
    thread's own clock (which keeps the time of threads that ended); elsewhere, the caller's
    thread clock plus each native thread's, listed anew at every reading. The whole process's
    where Linux's /proc/self/task is not there to list threads.
    """

    def __init__(self) -> None:
        self._seen_python: set[str] | None = None  # None: the caller is Python's only thread
        self._natives: list[str] = []
        self._own = 0.0
        self._native_start: dict[str, float] = {}

    def start(self, *, native_threads: bool = True) -> None:
        """Start counting; without ``native_threads``, leave out the native threads of a caller
        that is Python's only thread (their CPU then reaches the process clock at a tick)."""
        alone = threading.active_count() == 1
        python = set() if alone else {str(thread.native_id) for thread in threading.enumerate()}
        natives = native_thread_ids(python) if native_threads or not alone else []
        self._natives, self._native_start = [], {}
        if alone or natives is None:
            self._seen_python = None
            self._natives = natives or []
            self._own = self._process_seconds()
        else:
            self._seen_python = python
            self._own = time.thread_time()
            self._native_start = {task: _thread_seconds(task) for task in natives}

    @property
    def sees_native_threads(self) -> bool:
        """Whether :meth:`start` found native threads."""
        return bool(self._natives or self._native_start)

    def seconds(self) -> float:
        """CPU seconds used since :meth:`start`."""
        if self._seen_python is None:
            return self._process_seconds() - self._own
        own = time.thread_time() - self._own
        native = 0.0
        for task in native_thread_ids(self._seen_python) or []:
            native += max(0.0, _thread_seconds(task) - self._native_start.get(task, 0.0))
        return own + native

    def _process_seconds(self) -> float:
        for task in self._natives:
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
