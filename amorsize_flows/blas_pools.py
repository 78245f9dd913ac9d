"""The caller's BLAS/OpenMP thread pools: capped while a map shares the CPUs, and the spin that
restoring them after a fork leaves behind, waited out before the next dry run measures anything.

OpenBLAS re-creates its threads when its cap is lifted after a fork, and new threads busy-wait
for work for a while: 80 to 90 ms of CPU here, after every forking map in a caller that loaded
numpy. A dry run in that window counted their CPU as the function's: pure Python read as "2.0
CPUs' worth of threads of its own" and was planned serially, or on threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Set

from threadpoolctl import threadpool_limits

__all__ = ["capped", "native_thread_files", "native_thread_ids", "settle"]

# Polled this often while pool threads spin, and for at most this long: several times the spin
# measured, so a pool that never sleeps (a library spinning for good) cannot stall the caller.
SETTLE_POLL_SECONDS = 0.005
SETTLE_MAX_SECONDS = 0.5

_restored_after_fork_at: float | None = None


@contextlib.contextmanager
def capped(inner_threads: int, *, around_fork: bool = False) -> Iterator[None]:
    """Cap the caller's BLAS/OpenMP pools to ``inner_threads`` each, then restore them; with
    ``around_fork``, note when a pool was restored, for :func:`settle`."""
    global _restored_after_fork_at
    limiter = threadpool_limits(inner_threads)
    try:
        yield
    finally:
        limiter.restore_original_limits()
        originals = limiter.get_original_num_threads().values()
        if around_fork and any(count is not None and count > inner_threads for count in originals):
            _restored_after_fork_at = time.monotonic()


def settle() -> float:
    """After pools were restored around a fork, wait until their threads leave the CPUs (or
    SETTLE_MAX_SECONDS); return the seconds waited. Free when no fork restored a pool."""
    global _restored_after_fork_at
    if _restored_after_fork_at is None:
        return 0.0
    started = time.monotonic()
    deadline = _restored_after_fork_at + SETTLE_MAX_SECONDS
    while _pool_thread_on_cpu() and time.monotonic() < deadline:
        time.sleep(SETTLE_POLL_SECONDS)
    _restored_after_fork_at = None
    return time.monotonic() - started


def _pool_thread_on_cpu() -> bool:
    """Whether a native thread of this process (one Python did not start: a BLAS or OpenMP
    pool's) is running or waiting for a CPU now."""
    stats = native_thread_files("stat")
    # The state follows the command name, which may hold spaces.
    return any(text.rsplit(b")", 1)[-1].split()[:1] == [b"R"] for text in (stats or {}).values())


def native_thread_ids(python_threads: Set[str] = frozenset()) -> list[str] | None:
    """The native ids of this process's threads that Python did not start, nor any of
    ``python_threads``, from Linux's /proc/self/task; None where the kernel does not list
    threads there."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    python = python_threads | {str(thread.native_id) for thread in threading.enumerate()}
    return [task for task in tasks if task not in python]


def native_thread_files(
    name: str, python_threads: Set[str] = frozenset()
) -> dict[str, bytes] | None:
    """The file ``name`` (``stat``, ``schedstat``) of each thread :func:`native_thread_ids`
    lists, by native id; None where the kernel does not list threads."""
    tasks = native_thread_ids(python_threads)
    if tasks is None:
        return None
    found = {}
    for task in tasks:
        try:
            descriptor = os.open(f"/proc/self/task/{task}/{name}", os.O_RDONLY)
        except OSError:
            continue  # ended meanwhile
        try:
            found[task] = os.read(descriptor, 1024)
        except OSError:
            continue
        finally:
            os.close(descriptor)
    return found
