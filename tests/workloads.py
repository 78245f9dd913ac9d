"""Functions the tests map: module-level, so that every start method can import them."""

from __future__ import annotations

import gc
import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

_model: dict[str, int] | None = None
MODEL_LOAD_SECONDS = 0.05


def square(x: int) -> int:
    return x * x


def busy(seconds: float) -> float:
    """Burn ``seconds`` of this thread's CPU time in pure Python, holding the GIL.

    Watched on the thread's own CPU clock, not a fixed amount of work: this host's CPUs run at
    times twice as fast as at others (a 3 ms call of fixed work took 1.3 to 4 ms), and tests of
    thresholds need calls to cost what they say. Two threads each watch their own clock, and a
    thread waiting for the GIL or for a CPU does not advance it."""
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        for _ in range(20):  # a clock reading every microsecond or so, each costing about as much
            pass
    return seconds


def busy_where(seconds: float) -> tuple[float, int]:
    """busy(), and the process it ran in."""
    return busy(seconds), os.getpid()


def busy_when(seconds: float) -> tuple[int, float, float]:
    """busy(), and the process it ran in, its start and its end (monotonic, machine-wide)."""
    started = time.monotonic()
    busy(seconds)
    return os.getpid(), started, time.monotonic()


def record_collecting_at(x: int, at: int = 5_000) -> dict[str, int]:
    """A cheap dict per item; item ``at`` first runs a full garbage collection, as allocations
    made long before can make any call do."""
    if x == at:
        gc.collect()
    return {"x": x}


_BLOB = bytes(range(256)) * 4096  # 1 MiB


def hash_blob(rounds: int) -> int:
    """Hash a 1 MiB blob ``rounds`` times: busy and GIL-free (hashlib releases the GIL for large
    buffers), with an int in and an int out, so pickling costs next to nothing."""
    for _ in range(rounds):
        digest = hashlib.sha256(_BLOB).digest()
    return rounds * digest[0]


def busy_or_hash(item: tuple[str, float]) -> float:
    """``("busy", seconds)``: busy(seconds), holding the GIL; ``("hash", rounds)``:
    hash_blob(rounds), releasing it."""
    kind, amount = item
    return busy(amount) if kind == "busy" else hash_blob(int(amount))


def on_cpus(item: tuple[frozenset[int], Callable[[Any], Any], Any]) -> Any:
    """``func(arg)`` for an item ``(cpus, func, arg)``, with the calling thread on ``cpus`` for the
    call: two threads moved to one CPU take turns, as if other processes held the others."""
    cpus, func, arg = item
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        return func(arg)
    finally:
        os.sched_setaffinity(0, before)


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail_on(x: int, bad: int = 7) -> int:
    if x == bad:
        raise ValueError(f"item value {x} is bad")
    return x


def die_on(x: int, bad: int = 5) -> int:
    if x == bad:
        os._exit(3)  # a worker that vanishes without a word, like an OOM kill
    return x


def pid_of(_: object) -> int:
    return os.getpid()


def with_model(x: int) -> int:
    """A model loaded lazily on the first call in each process, then quick calls."""
    global _model
    if _model is None:
        time.sleep(MODEL_LOAD_SECONDS)
        _model = {"offset": 1}
    return x + _model["offset"]


def append_to(x: int, log_path: str) -> int:
    """A side effect per call: one line per item, to count how often each item ran."""
    with open(log_path, "a") as log:
        log.write(f"{x}\n")
    return x


def busy_then_append_to(x: int, log_path: str) -> int:
    """About 2 ms of pure-Python CPU, then append_to(): work worth processes, counted per item."""
    busy(0.002)
    return append_to(x, log_path)


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # two required args: pickling it back fails
        super().__init__(f"{a}/{b}")


def model_was_warm(x: int) -> bool:
    """Whether this process had the model loaded before this call (fork inherits it)."""
    warm = _model is not None
    with_model(x)
    return warm


def raise_unpicklable(x: int) -> int:
    if x == 3:
        raise Unpicklable(1, 2)
    return x


def lock_on(x: int, bad: int = 3) -> object:
    """Return a lock (which no pickle can carry) for item ``bad``, else the item."""
    return threading.Lock() if x == bad else x


def frozen_objects(_: object) -> int:
    """How many objects this process's garbage collector keeps frozen (gc.freeze)."""
    return gc.get_freeze_count()


def pause_at(x: int, at: int = 500, seconds: float = 0.02) -> int:
    """Cheap, except that item ``at`` stalls as a garbage collection of a big heap would."""
    if x == at:
        time.sleep(seconds)
    return x


def busy_counting_threads(seconds: float) -> tuple[int, int]:
    """busy(), then this process's id and how many OS threads it runs (BLAS pools included)."""
    busy(seconds)
    return os.getpid(), len(os.listdir("/proc/self/task"))


def blas_threads(_: object) -> int:
    """The most threads any BLAS/OpenMP pool of this process has, numpy loaded here if need be."""
    import numpy  # noqa: F401  (loads OpenBLAS, whose pool size is read from the environment)
    from threadpoolctl import threadpool_info

    return max((pool["num_threads"] for pool in threadpool_info()), default=0)


def blas_after_a_product(_: object) -> tuple[int, int, int]:
    """After a numpy matrix product here: this pid, the largest BLAS pool, this process's threads."""
    import numpy as np
    from threadpoolctl import threadpool_info

    matrix = np.ones((200, 200))
    matrix @ matrix
    largest = max((pool["num_threads"] for pool in threadpool_info()), default=0)
    return os.getpid(), largest, len(os.listdir("/proc/self/task"))


def busy_at_priority(seconds: float) -> tuple[float, int]:
    """busy(), and the scheduling policy of the thread that ran it (os.SCHED_IDLE or another)."""
    return busy(seconds), os.sched_getscheduler(0)


def busy_failing_at(x: int, at: int = 300) -> int:
    """About 2 ms of pure-Python CPU; item ``at`` raises ValueError."""
    busy(0.002)
    if x == at:
        raise ValueError(f"item {x} is bad")
    return x


def busy_noting_pids(seconds: float, log_path: str) -> float:
    """busy(), then a line "pid parent-pid" appended to ``log_path``: which processes ran it."""
    busy(seconds)
    with open(log_path, "a") as log:
        log.write(f"{os.getpid()} {os.getppid()}\n")
    return seconds


def joblib_jobs(_: object) -> int:
    """The threads a joblib-parallel call made here would get (scikit-learn's n_jobs=None)."""
    import joblib
    from joblib.parallel import get_active_backend

    _, n_jobs = get_active_backend()
    return joblib.effective_n_jobs(n_jobs) if n_jobs is not None else 1


def busy_on_two_threads(seconds: float) -> float:
    """busy() on each of two threads this call starts and joins (as joblib's threading backend
    runs a forest's trees): the call keeps 2 CPUs busy, none of it on the calling thread."""
    import threading

    workers = [threading.Thread(target=busy, args=(seconds,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return seconds
