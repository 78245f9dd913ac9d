"""How long the calling thread has waited for a CPU: ready to run, but none was free for it.

A call's wall time beyond its CPU time is not all waiting on I/O. On a busy node (other tasks
of the same Airflow worker, the host's other tenants), part of it is time in the run queue, and
threads cannot overlap that: there is no free CPU to run another call on meanwhile
(docs/decisions.md#cpu-ratio).

On a virtual machine the host also takes the CPU away from a running thread (steal time), and no
run queue of the guest shows it. A thread that waits blocks in the kernel, which counts it (a
voluntary context switch); one that was only kept from running never blocked. So where the
thread never blocked, all of its wall time beyond its CPU time counts as waiting for a CPU.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

try:
    import resource
except ImportError:  # not a Unix
    resource = None  # type: ignore[assignment]

__all__ = ["SCHEDSTAT", "Mark", "blocks", "cpu_ratio", "mark", "queued_seconds", "queued_since"]

SCHEDSTAT = "/proc/thread-self/schedstat"
# Linux counts a thread's own context switches; elsewhere only the process's are counted.
_RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)


class _Reader:
    """The schedstat file of one thread, kept open: a read again costs a sixth of one anew."""

    def __init__(self) -> None:
        self.thread = threading.get_native_id()
        try:
            self.descriptor: int | None = os.open(SCHEDSTAT, os.O_RDONLY)
        except OSError:
            self.descriptor = None  # not Linux, or schedstats left out of the kernel

    def seconds(self) -> float:
        if self.descriptor is None:
            return 0.0
        try:
            return int(os.pread(self.descriptor, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def __del__(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)


_readers = threading.local()


def queued_seconds() -> float:
    """Seconds the calling thread has spent runnable while no CPU was free for it, since it
    started: the second field of Linux's /proc/thread-self/schedstat. 0.0 where the kernel does
    not say, which makes every wall second beyond the CPU's a wait, as without this module."""
    reader: _Reader | None = getattr(_readers, "reader", None)
    # A forked child's thread inherits its parent's reader, which reads the parent's thread.
    if reader is None or reader.thread != threading.get_native_id():
        reader = _readers.reader = _Reader()
    return reader.seconds()


def blocks() -> int | None:
    """How many times the calling thread has blocked since it started (on I/O, a sleep, a lock,
    the GIL): its voluntary context switches. None where they are not counted per thread.
    Reading them does not release the GIL, so reading them cannot block."""
    if _RUSAGE_THREAD is None:
        return None
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw


@dataclass(frozen=True)
class Mark:
    """The calling thread's waits for a CPU and its blocks, at the start of a stretch of calls."""

    queued: float
    blocks: int | None


def mark() -> Mark:
    """Where the calling thread's waits and blocks stand now, for :func:`queued_since`."""
    queued = queued_seconds()  # releases the GIL, and may block on it: before the blocks
    return Mark(queued, blocks())


def queued_since(start: Mark, wall_seconds: float, cpu_seconds: float) -> float:
    """Seconds of the ``wall_seconds`` since ``start`` that the calling thread was ready to run
    without running: its waits for a CPU, or, where it never blocked meanwhile, all the wall
    time beyond ``cpu_seconds``: the host's steal, which no run queue shows."""
    blocks_now = blocks()  # before the schedstat read, which may block on the GIL
    queued = queued_seconds() - start.queued
    if start.blocks is not None and blocks_now == start.blocks:
        return max(queued, wall_seconds - cpu_seconds)
    return queued


def cpu_ratio(cpu_seconds: float, wall_seconds: float, queued: float) -> float:
    """CPU seconds per wall second, the ``queued`` seconds of waits for a CPU counted as busy:
    they explain wall time the CPU clock did not see, up to one CPU's worth. They are no evidence
    of threads of the call's own, and must not multiply CPU time the clock over-counts past one
    CPU (once, in Prefect's threaded test process, pure-Python calls read 1.6 CPUs' worth)."""
    if wall_seconds <= 0:
        return 1.0
    plain = cpu_seconds / wall_seconds
    running = wall_seconds - queued
    if running <= 0:
        return max(plain, 1.0)
    return max(plain, min(1.0, cpu_seconds / running))
