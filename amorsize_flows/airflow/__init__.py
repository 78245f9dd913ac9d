"""amorsize-flows for Apache Airflow 3: ``AmorsizeOperator`` and ``@task.amorsize``.

Each stage measures its function on the worker that runs it, plans the map inside that worker's
limits, pushes the plan to XCom (``amorsize_plan``) with what the run cost (``amorsize_run``),
and starts the next scheduled run from that record.

Airflow reads ``provider_info`` while it is still configuring itself, which imports this package:
so nothing here imports Airflow until a name is asked for.
"""

from __future__ import annotations

import importlib.util
from typing import Any

try:
    _installed = importlib.util.find_spec("airflow") is not None
except ImportError:  # a broken or blocked installation counts as none
    _installed = False
if not _installed:
    raise ImportError(
        'amorsize_flows.airflow needs Apache Airflow 3: pip install "amorsize-flows[airflow]"'
    )

__all__ = ["AmorsizeOperator", "amorsize_task"]


def __getattr__(name: str) -> Any:
    if name == "AmorsizeOperator":
        from .operators import AmorsizeOperator

        return AmorsizeOperator
    if name == "amorsize_task":
        from .decorators import amorsize_task

        return amorsize_task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
