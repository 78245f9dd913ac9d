"""What a fresh worker pays before its first call: loading the function and everything it imports.

The calibration measures starting a bare interpreter; a worker that then unpickles a function
from a module that imports scikit-learn pays a second or more on top. That cost is measured here,
once per function and machine, by unpickling the function in a fresh interpreter, and cached.
Forked workers never pay it (they inherit the caller's modules), so it is measured only when a
plan would start fresh interpreters. What it measures is the code's: arguments bound to the
function (a ``functools.partial`` over the night's features) change from run to run, and are not
measured again each time (1.5 s a night for the retraining flow's ``train_member``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

from .calibrate import cache_path
from .profile import function_identity

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
_PROBE_TIMEOUT_SECONDS = 60


def fresh_load_seconds(func: Callable[..., Any]) -> float | None:
    """Seconds a fresh interpreter takes to import cloudpickle and load ``func``'s code: its
    module and everything that imports. Arguments bound by ``functools.partial`` are left out.

    Returns None when it cannot be measured (the function does not load outside this process).
    """
    while isinstance(func, functools.partial):
        func = func.func
    name, digest = function_identity(func)
    key = hashlib.sha256(f"{name}\0{digest}".encode()).hexdigest()[:24]
    store = cache_path().with_name("worker-start.json")
    known = _read(store)
    if key in known:
        return known[key]
    seconds = _measure(cloudpickle.dumps(func))
    if seconds is not None:
        known[key] = seconds
        _write(store, known)
    return seconds


def _measure(function_bytes: bytes) -> float | None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, sys.path))  # what loky's workers see
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            input=function_bytes,
            capture_output=True,
            env=env,
            timeout=_PROBE_TIMEOUT_SECONDS,
            check=True,
        )
        return float(done.stdout.decode().strip())
    except (OSError, subprocess.SubprocessError, ValueError) as error:
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


def _write(store: Path, known: dict[str, float]) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    partial = store.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(known))
    os.replace(partial, store)
