"""A module as costly to import as one that loads scikit-learn: a fresh worker pays it first.

Imported by the one test that needs it, so that no other test waits for it.
"""

from __future__ import annotations

import time

from tests.workloads import busy

IMPORT_SECONDS = 1.0
time.sleep(IMPORT_SECONDS)


def busy_after_slow_import(seconds: float) -> float:
    return busy(seconds)


def spin_after_slow_import(seconds: float) -> float:
    """Hold a CPU for ``seconds`` of wall time, however fast the host runs today."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return seconds


def hash_after_slow_import(rounds: int) -> int:
    """Only the budgeted-probe test measures this one's load."""
    return hash(rounds)
