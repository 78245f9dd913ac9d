"""The machine's own costs of parallelism, measured once and cached as JSON.

No constant stands in for a measurement: what it costs here to start a worker, to hand it a task
and to move bytes through its pipe is measured (by ``execution.machine_costs``, through the runner
the plans use) in a fresh, single-threaded interpreter, so that fork is safe to try and nothing of
the caller's state skews it; cached in the user's cache directory, and measured again when the
machine, Python or the executor library changes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..data.errors import AmorsizeError
from ..data.json_files import write_json
from ..probes.lock_files import exclusive
from ..probes.processes import FreshPythonFailed, run_fresh_python

__all__ = ["CACHE_DIR_ENV", "Calibration", "cache_path", "fingerprint", "get_calibration"]

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "AMORSIZE_CACHE_DIR"

# Bumped whenever what is measured changes, so that older caches are measured again.
CALIBRATION_VERSION = "6"
# The measurement normally takes 1 to 3 s; past this something is wrong.
CALIBRATION_TIMEOUT_SECONDS = 120
# What the costs depend on, besides the machine and Python: reinstalled, measure again.
_MEASURED_PACKAGES = ("amorsize_flows", "loky", "cloudpickle")


@dataclass(frozen=True)
class Calibration:
    """Costs of parallelism on this machine, in seconds and bytes.

    ``*_start`` pairs are ``(fixed, per_worker)``: starting ``k`` workers and shutting them down
    again costs ``fixed + per_worker * k`` seconds. ``process_task_seconds`` is what one task
    costs with idle CPUs; ``process_task_loaded_seconds`` what it costs when the workers keep
    every CPU busy, and the caller's side of each hand-off must wait for a CPU.
    """

    fork_start: tuple[float, float] | None
    loky_start: tuple[float, float]
    process_task_seconds: float
    process_task_loaded_seconds: float
    thread_start: tuple[float, float]
    thread_task_seconds: float
    pipe_bytes_per_second: float
    worker_memory_bytes: int
    fingerprint: str = ""
    measured_at: str = ""

    def process_start_seconds(self, start_method: str, n_workers: int) -> float:
        """Seconds to start ``n_workers`` processes with ``start_method`` and stop them again."""
        pair = self.fork_start if start_method == "fork" else self.loky_start
        if pair is None:
            raise ValueError(f"start method {start_method!r} is not available on this machine")
        return pair[0] + pair[1] * n_workers

    def thread_start_seconds(self, n_workers: int) -> float:
        """Seconds to start ``n_workers`` threads and join them again."""
        return self.thread_start[0] + self.thread_start[1] * n_workers

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Rebuild from :meth:`to_dict`; raises ValueError or TypeError when malformed."""
        values = {f.name: data[f.name] for f in fields(cls)}
        for name in ("fork_start", "loky_start", "thread_start"):
            pair = values[name]
            values[name] = None if pair is None else (float(pair[0]), float(pair[1]))
        if values["loky_start"] is None:
            raise ValueError("loky_start is missing")
        for name in (
            "process_task_seconds",
            "process_task_loaded_seconds",
            "thread_task_seconds",
            "pipe_bytes_per_second",
        ):
            values[name] = float(values[name])
            if not values[name] > 0:
                raise ValueError(f"{name} must be positive")
        values["worker_memory_bytes"] = int(values["worker_memory_bytes"])
        return cls(**values)


@functools.lru_cache(maxsize=1)
def fingerprint() -> str:
    """What the measurements depend on: change any of it and they are taken again."""
    facts = [
        *os.uname()[1:],  # the host's name, the kernel's release and version, the machine
        sys.implementation.name,
        sys.version,
        str(os.cpu_count()),
        *map(_installed, _MEASURED_PACKAGES),
        CALIBRATION_VERSION,
    ]
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


def _installed(package: str) -> str:
    """Where ``package`` is installed, and when: a stand-in for its version, found without
    importing the package or reading its metadata, which cost tens of milliseconds."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return f"{package}: missing"
    return f"{spec.origin}@{os.stat(spec.origin).st_mtime_ns}"


def cache_path() -> Path:
    """Where this machine's calibration is cached (``AMORSIZE_CACHE_DIR`` moves it)."""
    directory = os.environ.get(CACHE_DIR_ENV) or _user_cache_dir()
    return Path(directory) / f"calibration-{fingerprint()}.json"


@functools.lru_cache(maxsize=1)
def _cached(path: Path) -> Calibration:
    calibration = _read(path)
    if calibration is not None:
        return calibration
    # Maps started together on a new node would measure side by side, each slowing the others'
    # measurement: one measures, the others wait and read what it wrote.
    with exclusive(os.fspath(path.with_suffix(".lock"))):
        calibration = _read(path)
        if calibration is not None:
            return calibration
        return _measure_and_store(path)


def _read(path: Path) -> Calibration | None:
    try:
        return Calibration.from_dict(json.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, IndexError) as error:
        log.warning(
            "Ignoring the unreadable calibration cache %s (%s); measuring again.", path, error
        )
        return None


def _measure_and_store(path: Path) -> Calibration:
    calibration = _measure_in_subprocess()
    write_json(path, calibration.to_dict(), indent=2)  # a concurrent reader sees old or new
    log.info("Calibrated this machine in a subprocess; cached at %s", path)
    return calibration


def get_calibration() -> Calibration:
    """This machine's calibration: from the cache, or measured now (1 to 3 seconds, once).

    Raises:
        AmorsizeError: when the measurement could not run.
    """
    return _cached(cache_path())


def _measure_in_subprocess() -> Calibration:
    try:
        printed = run_fresh_python(
            ["-m", "amorsize_flows.execution.machine_costs"], timeout=CALIBRATION_TIMEOUT_SECONDS
        )
        return Calibration.from_dict(json.loads(printed))
    except (FreshPythonFailed, ValueError, TypeError, KeyError) as error:
        raise AmorsizeError(
            f"Could not measure this machine's parallel costs ({error}). Run "
            f"`python -m amorsize_flows.execution.machine_costs` to see the full error."
        ) from error


def _user_cache_dir() -> str:
    import platformdirs  # imported only where AMORSIZE_CACHE_DIR does not say where

    return platformdirs.user_cache_dir("amorsize-flows")
