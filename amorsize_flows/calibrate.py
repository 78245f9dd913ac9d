"""The machine's own costs of parallelism, measured once and cached as JSON.

No constant stands in for a measurement: what it costs here to start a worker, to hand it a task
and to move bytes through its pipe is measured in a fresh, single-threaded interpreter (so that
fork is safe to try and nothing of the caller's state skews it), cached in the user's cache
directory, and measured again when the machine, Python or the executor library changes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import cloudpickle
import loky
import platformdirs
import psutil
from loky.backend.context import get_context

from .errors import AmorsizeError
from .plan import Plan
from .runner import fork_is_safe, run_plan

__all__ = ["CACHE_DIR_ENV", "Calibration", "cache_path", "get_calibration", "measure"]

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "AMORSIZE_CACHE_DIR"

# How many times each pool start is measured: the first start in a fresh interpreter also pays
# the imports of the executor library, as an orchestrator task (a fresh process) does; the mean
# of three starts keeps that share without letting one slow start dominate.
_START_REPEATS = 3
# Enough trivial tasks that per-task overhead dominates timer resolution by orders of magnitude.
_DISPATCH_TASKS = 300
# Large enough that the pipe's bandwidth, not per-task latency, dominates the round trip.
_PIPE_PAYLOAD_BYTES = 8 << 20
# Tasks of about this much CPU keep every worker busy while the hand-off cost is measured: long
# against the hand-off, short enough that the four runs take under a second on two CPUs.
_LOADED_TASK_SECONDS = 0.001
_LOADED_TASKS = 400
# Threads that take the tasks while their hand-off is measured: two, where the GIL changes hands.
_THREAD_TASK_WORKERS = 2
# Threads started to measure what one more costs: as many as a map of waiting calls runs on two
# CPUs, each held until all have started, as a map's waiting calls hold theirs. Extrapolated from
# starting two threads on empty tasks (which an executor hands to the threads already idle), 64
# were counted 3.6 ms where a map of 300 waits of 10 ms took 17 to 38 ms to start them: predicted
# 81 to 101 ms with its dry run, it took 97 to 124.
_THREAD_START_COUNT = 64
# How long a calibration thread waits for the others to start before the measurement fails.
_THREAD_START_TIMEOUT_SECONDS = 10.0
# Bumped whenever what is measured changes, so that older caches are measured again.
_CALIBRATION_VERSION = "6"
# The calibration subprocess normally takes 1 to 3 s; past this something is wrong.
_CALIBRATION_TIMEOUT_SECONDS = 120


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
def _fingerprint() -> str:
    """What the measurements depend on: change any of it and they are taken again."""
    facts = [
        platform.node(),
        platform.machine(),
        platform.release(),
        platform.python_implementation(),
        platform.python_version(),
        str(os.cpu_count()),
        loky.__version__,
        cloudpickle.__version__,
        _version(),
        _CALIBRATION_VERSION,
    ]
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


def _version() -> str:
    from . import __version__

    return __version__


def cache_path() -> Path:
    """Where this machine's calibration is cached (``AMORSIZE_CACHE_DIR`` moves it)."""
    directory = os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("amorsize-flows")
    return Path(directory) / f"calibration-{_fingerprint()}.json"


@functools.lru_cache(maxsize=1)
def _cached(path: Path) -> Calibration:
    try:
        return Calibration.from_dict(json.loads(path.read_bytes()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, KeyError, IndexError) as error:
        log.warning(
            "Ignoring the unreadable calibration cache %s (%s); measuring again.", path, error
        )
    calibration = _measure_in_subprocess()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(calibration.to_dict(), indent=2) + "\n")
    os.replace(partial, path)  # atomic: a concurrent reader sees the old file or the new one
    log.info("Calibrated this machine in a subprocess; cached at %s", path)
    return calibration


def get_calibration() -> Calibration:
    """This machine's calibration: from the cache, or measured now (1 to 3 seconds, once).

    Raises:
        AmorsizeError: when the measurement could not run.
    """
    return _cached(cache_path())


def _measure_in_subprocess() -> Calibration:
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "amorsize_flows.calibrate"]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=_CALIBRATION_TIMEOUT_SECONDS,
            check=True,
        )
        return Calibration.from_dict(json.loads(completed.stdout))
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, KeyError) as error:
        detail = getattr(error, "stderr", "") or ""
        raise AmorsizeError(
            f"Could not measure this machine's parallel costs ({error}). {detail.strip()[-500:]} "
            f"Run `python -m amorsize_flows.calibrate` to see the full error."
        ) from error


# --- the measurements (run in the calibration subprocess) ----------------------------------


def _noop(value: object = None) -> object:
    return value


def _pid(_: object = None) -> int:
    return os.getpid()


def _time_pool_start(context_name: str, n_workers: int) -> float:
    """Start a pool, get one answer from every worker, shut it down; seconds for all of it."""
    started = time.perf_counter()
    executor = loky.ProcessPoolExecutor(max_workers=n_workers, context=get_context(context_name))
    # Twice as many short tasks as workers: every worker must be up before the last answer.
    list(executor.map(_pid, range(2 * n_workers)))
    executor.shutdown(wait=True)
    return time.perf_counter() - started


def _linear_fit(one: float, many: float, n_many: int) -> tuple[float, float]:
    per_worker = max(0.0, (many - one) / (n_many - 1)) if n_many > 1 else 0.0
    return (max(0.0, one - per_worker), per_worker)


def _start_pair(context_name: str, n_many: int) -> tuple[float, float]:
    one = statistics.mean(_time_pool_start(context_name, 1) for _ in range(_START_REPEATS))
    if n_many == 1:
        return (one, 0.0)
    many = statistics.mean(_time_pool_start(context_name, n_many) for _ in range(_START_REPEATS))
    return _linear_fit(one, many, n_many)


def _process_costs() -> tuple[float, float, int]:
    """Per-task overhead, pipe bandwidth and a fresh worker's memory, on one loky worker."""
    executor = loky.ProcessPoolExecutor(max_workers=1, context=get_context("loky"))
    try:
        worker_pid = executor.submit(_pid).result()
        started = time.perf_counter()
        for future in [executor.submit(_noop, index) for index in range(_DISPATCH_TASKS)]:
            future.result()
        task_seconds = (time.perf_counter() - started) / _DISPATCH_TASKS
        payload = b"\0" * _PIPE_PAYLOAD_BYTES
        executor.submit(_noop, payload).result()  # warm the pipe buffers once
        started = time.perf_counter()
        executor.submit(_noop, payload).result()
        round_trip = max(time.perf_counter() - started - task_seconds, 1e-9)
        worker_memory = psutil.Process(worker_pid).memory_info().rss
    finally:
        executor.shutdown(wait=True)
    return task_seconds, 2 * _PIPE_PAYLOAD_BYTES / round_trip, worker_memory


def _spin(iterations: int) -> int:
    total = 0
    for step in range(iterations):
        total += step
    return total


def _loaded_task_seconds(n_workers: int) -> float:
    """Per-task overhead while every worker is busy.

    Measured through the runner the plans use (its ordered in-flight window, its chunk wrapper,
    fork when it would fork), not a bare executor: with every CPU busy, each hand-off also costs
    the caller's CPU time, taken from the workers, and only the real loop shows how much.
    """
    started = time.perf_counter()
    _spin(200_000)
    iterations = int(200_000 * _LOADED_TASK_SECONDS / (time.perf_counter() - started))
    start_method = "fork" if fork_is_safe() else "loky"
    work = [iterations] * _LOADED_TASKS
    handoff = _extra_task_seconds("processes", n_workers, _spin, work, start_method=start_method)
    # The workers took the extra tasks side by side: the map grew by 1/n_workers of their cost.
    return handoff * n_workers


def _thread_costs() -> tuple[tuple[float, float], float]:
    def start(n_workers: int) -> float:
        # Every task waits for all the others: no thread goes idle, so the executor starts each.
        everyone = threading.Barrier(n_workers, timeout=_THREAD_START_TIMEOUT_SECONDS)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n_workers) as executor:
            list(executor.map(lambda _: everyone.wait(), range(n_workers)))
        return time.perf_counter() - started

    one = statistics.mean(start(1) for _ in range(_START_REPEATS))
    many = statistics.mean(start(_THREAD_START_COUNT) for _ in range(_START_REPEATS))
    return _linear_fit(one, many, _THREAD_START_COUNT), _thread_task_seconds()


def _thread_task_seconds() -> float:
    """Per-task overhead of threads, through the runner the plans use, from empty calls.

    All of it is Python holding the GIL (the caller's loop and the executor's queue alike), so it
    is serial however many threads run: a bare executor's submit and result measured 12.7 µs a
    task here, where the runner's tasks cost 25 to 37 µs, and threads x3 in chunks of 1 hashed
    2000 blobs in 0.096 s, not 0.041.
    """
    handoff = _extra_task_seconds("threads", _THREAD_TASK_WORKERS, _noop, range(_DISPATCH_TASKS))
    return max(handoff, 1e-9)


def _extra_task_seconds(
    backend: Literal["threads", "processes"],
    n_workers: int,
    func: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    start_method: str | None = None,
) -> float:
    """What each task beyond one per worker adds, through the runner the plans use.

    ``items`` run as one task per item and as one chunk per worker, each the faster of two runs;
    the difference, over the extra tasks, is the cost of a hand-off alone (no compute estimate,
    no start-up in it).
    """

    def fastest(chunksize: int) -> float:
        plan = Plan.fixed(backend, n_workers, chunksize, start_method=start_method)
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            for _ in run_plan(plan, func, iter(items)):
                pass
            timings.append(time.perf_counter() - started)
        return min(timings)

    one_per_item, one_per_worker = fastest(1), fastest(-(-len(items) // n_workers))
    return max(0.0, one_per_item - one_per_worker) / (len(items) - n_workers)


def measure() -> Calibration:
    """Measure this machine now, in this process (which should be fresh and single-threaded)."""
    n_many = max(2, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2, 4))
    fork_start = _start_pair("fork", n_many) if hasattr(os, "fork") else None
    loky_start = _start_pair("loky", n_many)
    task_seconds, bandwidth, worker_memory = _process_costs()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    loaded_task_seconds = max(task_seconds, _loaded_task_seconds(cpus))
    thread_start, thread_task_seconds = _thread_costs()
    return Calibration(
        fork_start=fork_start,
        loky_start=loky_start,
        process_task_seconds=task_seconds,
        process_task_loaded_seconds=loaded_task_seconds,
        thread_start=thread_start,
        thread_task_seconds=thread_task_seconds,
        pipe_bytes_per_second=bandwidth,
        worker_memory_bytes=worker_memory,
        fingerprint=_fingerprint(),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


if __name__ == "__main__":
    print(json.dumps(measure().to_dict()))
