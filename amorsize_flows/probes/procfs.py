"""Small reads of Linux's /proc: one system call each, no file objects.

The planner reads a dozen of these before a parallel map; a system call costs microseconds,
and the kernel hands out a file of a few lines whole in the first read.
"""

from __future__ import annotations

import os

__all__ = [
    "current_cpu",
    "peak_resident_bytes",
    "read_bytes",
    "read_text",
    "reset_peak_resident",
    "resident_bytes",
    "usable_cpus",
]

# The files read here are a few lines; /proc/self/cgroup is one line per controller.
MAX_FILE_BYTES = 1 << 16

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_bytes(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes | None:
    """The first ``max_bytes`` of the file at ``path``, or None where it cannot be read."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(descriptor, max_bytes)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def read_text(path: str) -> str | None:
    """The file at ``path`` as text, or None where it cannot be read."""
    data = read_bytes(path)
    return None if data is None else data.decode(errors="replace")


def usable_cpus() -> int:
    """The CPUs this process may run on now (its affinity mask), whatever quota throttles it;
    ``os.cpu_count()`` where the system keeps no mask."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resident_bytes() -> int:
    """This process's resident memory now: one read of /proc/self/statm, psutil elsewhere
    (psutil.Process() reads two more files first, to guard against a reused PID)."""
    statm = read_bytes("/proc/self/statm", 256)
    if statm is None:
        import psutil  # not Linux: the portable way

        return int(psutil.Process().memory_info().rss)
    return int(statm.split()[1]) * _PAGE_BYTES


def reset_peak_resident() -> bool:
    """Set this process's peak resident memory (VmHWM) back to what it holds now, so that the
    next :func:`peak_resident_bytes` is the peak since: Linux's ``/proc/self/clear_refs`` "5".
    False where the kernel does not allow it."""
    try:
        descriptor = os.open("/proc/self/clear_refs", os.O_WRONLY)
    except OSError:
        return False
    try:
        os.write(descriptor, b"5")
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)


def peak_resident_bytes() -> int | None:
    """This process's peak resident memory (VmHWM of /proc/self/status), or None."""
    status = read_bytes("/proc/self/status", 4096)
    start = -1 if status is None else status.find(b"VmHWM:")
    if status is None or start < 0:
        return None
    fields = status[start : status.find(b"\n", start)].split()
    return int(fields[1]) << 10 if len(fields) == 3 and fields[1].isdigit() else None


def current_cpu() -> int | None:
    """The CPU the calling thread runs on now (the 39th field of /proc/thread-self/stat), or
    None where the kernel does not say."""
    stat = read_bytes("/proc/thread-self/stat", 1024)
    if stat is None:
        return None
    try:
        # The fields after the command name, which may hold spaces.
        return int(stat.rsplit(b")", 1)[1].split()[36])
    except (IndexError, ValueError):
        return None
