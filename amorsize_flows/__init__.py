"""amorsize-flows: measure a function, plan its parallel map inside the worker's real limits, run it.

>>> import amorsize_flows as amz
>>> results = amz.execute(str.upper, ["a", "b", "c"])
>>> results
['A', 'B', 'C']

The Airflow and Prefect integrations live in ``amorsize_flows.airflow`` and
``amorsize_flows.prefect``; this module never imports them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import MapIterator, MapRun, execute, imap, optimize, run
from .errors import AmorsizeError, InvalidPlanError, MapCancelledError, WorkerDiedError
from .limits import WorkerLimits, parse_memory, worker_limits
from .plan import Candidate, Plan, RunRecord, load_config, save_config

__all__ = [
    # mapping
    "execute",
    "imap",
    "optimize",
    "run",
    "MapIterator",
    "MapRun",
    # plans and evidence
    "Candidate",
    "Plan",
    "RunRecord",
    "load_config",
    "save_config",
    # limits
    "WorkerLimits",
    "parse_memory",
    "worker_limits",
    # errors
    "AmorsizeError",
    "InvalidPlanError",
    "MapCancelledError",
    "WorkerDiedError",
    "__version__",
]
