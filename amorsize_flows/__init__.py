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

# The public names, each from the module that defines it. They load on first use (PEP 562): a
# process worker unpickling the runner's functions imports this package, and would otherwise pay
# for the planner, jsonschema and tqdm (150 ms against 46 ms, in every fresh worker).
_EXPORTS = {
    # mapping
    "execute": "api",
    "imap": "api",
    "optimize": "api",
    "run": "api",
    "MapIterator": "api",
    "MapRun": "api",
    # plans and evidence
    "Candidate": "plan",
    "Plan": "plan",
    "RunRecord": "plan",
    "load_config": "plan",
    "save_config": "plan",
    # limits
    "WorkerLimits": "limits",
    "parse_memory": "limits",
    "worker_limits": "limits",
    # errors
    "AmorsizeError": "errors",
    "InvalidPlanError": "errors",
    "MapCancelledError": "errors",
    "WorkerDiedError": "errors",
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
    from .errors import AmorsizeError, InvalidPlanError, MapCancelledError, WorkerDiedError
    from .limits import WorkerLimits, parse_memory, worker_limits
    from .plan import Candidate, Plan, RunRecord, load_config, save_config


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
