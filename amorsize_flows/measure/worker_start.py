"""What a fresh worker pays before its first call: loading the function and everything it imports.

The calibration measures starting a bare interpreter; a worker that then unpickles a function
from a module that imports scikit-learn pays a second or more on top. That cost is measured here,
once per function and machine, by unpickling the function in a fresh interpreter, and cached;
a probe that outlives what fresh workers could save is stopped, and that bound cached.
Forked workers never pay it (they inherit the caller's modules), so it is measured only when a
plan would start fresh interpreters. What it measures is the code's: arguments bound to the
function (a ``functools.partial`` over the night's features) change from run to run, and are not
measured again each time (docs/decisions.md#fresh-interpreters-must-pay-for-themselves).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data.json_files import write_json
from ..probes.processes import FreshPythonFailed, FreshPythonTimedOut, run_fresh_python
from .calibration import cache_path
from .identity import function_identity

__all__ = ["fresh_load_seconds"]

log = logging.getLogger(__name__)

_PROBE = (
    "import sys, time\n"
    "started = time.perf_counter()\n"
    "import cloudpickle\n"
    "cloudpickle.loads(sys.stdin.buffer.read())\n"
    "print(time.perf_counter() - started)\n"
)
# Loading a function in a fresh interpreter takes 0.05 s to a few seconds; past this, something
# is wrong and the plan should not wait for it.
PROBE_TIMEOUT_SECONDS = 60


def fresh_load_seconds(
    func: Callable[..., Any], budget: float = PROBE_TIMEOUT_SECONDS
) -> float | None:
    """Seconds a fresh interpreter takes to import cloudpickle and load ``func``'s code: its
    module and everything that imports. Arguments bound by ``functools.partial`` are left out.

    ``budget``: what fresh workers could save at most. The probe is stopped at it, and the load
    is then at least the budget (kept, so that a map that could save no more does not wait for
    the probe again): a map of a second is not delayed by two seconds to learn that it cannot
    pay for fresh workers. Returns None when it cannot be measured (the function does not load
    outside this process).
    """
    while isinstance(func, functools.partial):
        func = func.func
    name, digest = function_identity(func)
    key = hashlib.sha256(f"{name}\0{digest}".encode()).hexdigest()[:24]
    store = cache_path().with_name("worker-start.json")
    known = _read(store)
    if key in known:
        return known[key]
    bounds_store = store.with_name("worker-start-bounds.json")
    bounds = _read(bounds_store)
    if bounds.get(key, 0.0) >= budget:
        return bounds[key]
    import cloudpickle  # as the runner ships the function to fresh workers

    timeout = max(0.0, min(PROBE_TIMEOUT_SECONDS, budget))
    try:
        seconds = _measure(cloudpickle.dumps(func), timeout)
    except FreshPythonTimedOut:
        log.info(
            "amorsize: %s loads in more than %.3fs, all fresh workers could save: not waited for",
            name,
            timeout,
        )
        bounds[key] = timeout
        write_json(bounds_store, bounds)
        return timeout
    if seconds is not None:
        known[key] = seconds
        write_json(store, known)
    return seconds


def _measure(function_bytes: bytes, timeout: float) -> float | None:
    try:
        printed = run_fresh_python(["-c", _PROBE], stdin=function_bytes, timeout=timeout)
        return float(printed.strip())
    except FreshPythonTimedOut:
        raise
    except (FreshPythonFailed, ValueError) as error:
        log.warning("amorsize: could not load the function in a fresh interpreter (%s)", error)
        return None


def _read(store: Path) -> dict[str, float]:
    try:
        data = json.loads(store.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: float(value) for key, value in data.items() if isinstance(value, (int, float))}
