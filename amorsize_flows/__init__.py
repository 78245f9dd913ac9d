"""amorsize-flows: measure a function, plan its parallel map inside the worker's real limits, run it.

>>> import amorsize_flows as amz
>>> results = amz.execute(str.upper, ["a", "b", "c"])
>>> results
['A', 'B', 'C']

The Airflow and Prefect integrations live in ``amorsize_flows.airflow`` and
``amorsize_flows.prefect``; this module never imports them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The public names, each from the module that defines it, loaded on first use (PEP 562): a process
# worker unpickling the runner's functions imports this package, and needs none of the planner.
_EXPORTS = {
    # mapping
    "execute": "api",
    "imap": "api",
    "optimize": "api",
    "run": "api",
    "MapIterator": "api",
    "MapRun": "api",
    # plans and evidence
    "Candidate": "data.plan",
    "Plan": "data.plan",
    "RunRecord": "data.plan",
    "load_config": "data.plan",
    "save_config": "data.plan",
    # limits
    "WorkerLimits": "measure.limits",
    "parse_memory": "data.checks",
    "worker_limits": "measure.limits",
    # errors
    "AmorsizeError": "data.errors",
    "InvalidPlanError": "data.errors",
    "MapCancelledError": "data.errors",
    "WorkerDiedError": "data.errors",
}

# The same names, spelled out for tools that read __all__ (a test checks that each resolves).
__all__ = [
    "execute",
    "imap",
    "optimize",
    "run",
    "MapIterator",
    "MapRun",
    "Candidate",
    "Plan",
    "RunRecord",
    "load_config",
    "save_config",
    "WorkerLimits",
    "parse_memory",
    "worker_limits",
    "AmorsizeError",
    "InvalidPlanError",
    "MapCancelledError",
    "WorkerDiedError",
    "__version__",
]

if TYPE_CHECKING:
    from .api import MapIterator, MapRun, execute, imap, optimize, run
    from .data.checks import parse_memory
    from .data.errors import AmorsizeError, InvalidPlanError, MapCancelledError, WorkerDiedError
    from .data.plan import Candidate, Plan, RunRecord, load_config, save_config
    from .measure.limits import WorkerLimits, worker_limits


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
