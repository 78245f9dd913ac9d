"""Functions the Prefect tests map: in an importable module, so that worker processes find them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.workloads import busy


def square(x: int) -> int:
    """The cheapest map there is."""
    return x * x


def cube(x: int) -> int:
    """Another function of one item, to tell tasks apart."""
    return x * x * x


def scaled(x: int, factor: int = 1, offset: int = 0) -> int:
    """A function of one item with fixed keyword arguments."""
    return x * factor + offset


def nap(x: int, seconds: float = 0.01) -> int:
    """Waits, like I/O does."""
    time.sleep(seconds)
    return x


def spin(x: int, seconds: float = 0.01) -> int:
    """Holds a CPU for ``seconds`` of this thread's CPU time, in pure Python (workloads.busy).

    Spinning on the wall clock instead, it lost most of a dry run's one steady call to another
    of the engine's threads or to the host in some CI runs, read as 92% waiting, and 40 calls
    went to 8 threads."""
    busy(seconds)
    return x


def record_pid_and_nap(x: int, pid_dir: str, seconds: float = 0.5) -> int:
    """Leaves this process's id in ``pid_dir``, then waits: tests learn which processes ran items."""
    Path(pid_dir, str(os.getpid())).touch()
    time.sleep(seconds)
    return x


def fail_first_attempt(x: int, marker_dir: str) -> int:
    """Raises on item 3 until a marker file exists, then succeeds: exercises Prefect's retries."""
    marker = Path(marker_dir, "attempted")
    if x == 3 and not marker.exists():
        marker.touch()
        raise RuntimeError("the first attempt fails on item 3")
    return x


def count_calls(x: int, counter_dir: str) -> int:
    """Leaves one file per call in ``counter_dir``: tests learn whether the map ran at all."""
    Path(counter_dir, f"{os.getpid()}-{time.perf_counter_ns()}-{x}").touch()
    return x
