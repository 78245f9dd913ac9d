"""Functions the Airflow test DAGs map: importable, so any start method can load them."""

from __future__ import annotations

import time


def square(x: int, offset: int = 0) -> int:
    return x * x + offset


def slow(x: int, seconds: float = 0.2) -> int:
    """Burn CPU in Python for about ``seconds``: long enough to be killed mid-map."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return x


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError("seven is not allowed")
    return x


def big(x: int) -> str:
    return "x" * 10_000 + str(x)


def load_items() -> list[int]:
    return list(range(30))
