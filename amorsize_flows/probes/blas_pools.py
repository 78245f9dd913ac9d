"""The caller's BLAS/OpenMP thread pools: capped while a map shares the CPUs, and their spin
waited out before a dry run measures anything.

OpenBLAS threads busy-wait for more work once a product is done: after the caller's own numpy
work, and after every forking map in a caller that loaded numpy. A dry run in that window would
count their CPU as the function's (docs/decisions.md#blas-pools).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Set

from .procfs import read_bytes

__all__ = ["capped", "native_thread_files", "native_thread_ids", "settle"]

# Polled this often while pool threads spin, for at most this long (several times the spin); a
# thread still on a CPU then works for good, and is never waited for again. (docs/decisions.md#blas-pools)
SETTLE_POLL_SECONDS = 0.005
SETTLE_MAX_SECONDS = 0.5
# A runnable thread that ran less than a tenth of a poll since the last one only waits for a CPU
# (a spinning one sharing the CPUs with others still gets far more).
SPIN_NANOSECONDS = int(SETTLE_POLL_SECONDS / 10 * 1e9)

_busy_for_good: set[str] = set()  # native ids


@contextlib.contextmanager
def capped(inner_threads: int) -> Iterator[None]:
    """Cap the caller's BLAS/OpenMP pools to ``inner_threads`` each, then restore them."""
    from threadpoolctl import threadpool_limits  # only where pools are capped (import cost)

    limiter = threadpool_limits(inner_threads)
    try:
        yield
    finally:
        limiter.restore_original_limits()


def settle() -> float:
    """Wait until no native thread of this process spins on a CPU, at most SETTLE_MAX_SECONDS
    (those still spinning then work for good, and are never waited for again), and return the
    seconds waited: about 0.1 s after numpy work or a forking map, a listing of the process's
    threads (tens of µs) otherwise."""
    started = time.monotonic()
    on_cpu: dict[str, int] = {}
    while busy := _spinning(on_cpu) - _busy_for_good:
        if time.monotonic() - started >= SETTLE_MAX_SECONDS:
            _busy_for_good.update(busy)
            break
        time.sleep(SETTLE_POLL_SECONDS)
    return time.monotonic() - started


def _spinning(on_cpu: dict[str, int]) -> set[str]:
    """The native threads of this process (those Python did not start: BLAS and OpenMP pools')
    that are runnable now and, where ``on_cpu`` (updated here) saw them before, ran for at least
    a tenth of the time since: a thread that only waits for a CPU, on a node busy with other work (an
    orchestrator's services, other tasks), is not spinning."""
    stats = native_thread_files("stat") or {}
    # The state follows the command name, which may hold spaces.
    runnable = [
        task for task, text in stats.items() if text.rsplit(b")", 1)[-1].split()[:1] == [b"R"]
    ]
    spinning = set()
    for task in runnable:
        ran = read_bytes(f"/proc/self/task/{task}/schedstat", 256)
        now = int(ran.split()[0]) if ran else None  # nanoseconds on a CPU
        before = on_cpu.get(task)
        if now is None or before is None or now - before >= SPIN_NANOSECONDS:
            spinning.add(task)
        if now is not None:
            on_cpu[task] = now
    return spinning


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
        data = read_bytes(f"/proc/self/task/{task}/{name}", 1024)
        if data is not None:  # None: the thread ended meanwhile
            found[task] = data
    return found
