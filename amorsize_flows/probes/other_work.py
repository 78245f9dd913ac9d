"""How many of the node's CPUs other processes keep busy: the orchestrator's own services, other
tasks, a neighbour's job. Read from /proc/stat's time of every CPU less this process's own, over
a stretch this process was measuring anyway (the dry run)."""

from __future__ import annotations

import os
import time

from .procfs import read_bytes

__all__ = ["OtherWork"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/stat's first line: cpu user nice system idle iowait irq softirq steal guest guest_nice.
# Busy is every field but idle and iowait; guest time is already inside user.
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


class OtherWork:
    """Started at construction; :meth:`busy_cpus` tells what others used since."""

    def __init__(self) -> None:
        self._started = self._reading()

    def busy_cpus(self, min_seconds: float) -> float | None:
        """The CPUs other processes kept busy since the start, on average; None where the
        stretch was shorter than ``min_seconds`` (clock ticks of 10 ms tell nothing of less) or
        /proc/stat cannot be read."""
        ended = self._reading()
        if self._started is None or ended is None:
            return None
        wall = ended[0] - self._started[0]
        if wall < min_seconds:
            return None
        node = (ended[1] - self._started[1]) / _TICKS
        own = ended[2] - self._started[2]
        return max(0.0, (node - own) / wall)

    @staticmethod
    def _reading() -> tuple[float, int, float] | None:
        """(monotonic seconds, busy ticks of every CPU, this process's CPU seconds)."""
        stat = read_bytes("/proc/stat", 256)
        if not stat or not stat.startswith(b"cpu "):
            return None
        fields = stat.split(b"\n", 1)[0].split()[1:]
        busy = sum(int(fields[index]) for index in _BUSY_FIELDS if index < len(fields))
        times = os.times()
        return time.monotonic(), busy, times.user + times.system
