"""CPUs a deployment gives the task running in this context, such as its Airflow pool slots.

An orchestrator knows things about a task that no system file says: an Airflow task declared with
``pool_slots=4`` says it takes four units of its pool. The integrations declare such a budget
around the map, and the limits count it as one more source of CPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from ..data.checks import check_positive_int

__all__ = ["cpu_budget", "declared_cpus"]

_BUDGET: ContextVar[tuple[int, str] | None] = ContextVar("amorsize_cpu_budget", default=None)


@contextlib.contextmanager
def cpu_budget(cpus: int, source: str) -> Iterator[None]:
    """Plan the maps started in this context within ``cpus``, naming ``source`` as the reason."""
    check_positive_int("cpus", cpus)
    token = _BUDGET.set((cpus, source))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def declared_cpus() -> tuple[int, str] | None:
    """The budget declared for this context, as (CPUs, where it came from), or None."""
    return _BUDGET.get()
