"""What runs inside a worker process: its set-up, and its side of each chunk.

A worker imports this module (it unpickles these functions), so it imports little: no planner,
no schema, no progress bar.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from ..measure.peak_memory import PeakMemory
from ..probes.inner_jobs import inner_jobs
from ..probes.processes import mark_pool_worker
from .chunks import Outcome, run_chunk

__all__ = ["init_worker", "run_chunk_in_worker"]

# Environment variables that cap the thread pools of BLAS and OpenMP libraries not yet loaded.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>

_worker_function: Callable[[Any], Any] | None = None
_inner_threads = 1


def init_worker(function_bytes: bytes, inner_threads: int, cap_loaded_pools: bool) -> None:
    """Prepare a worker process: signals, orphan protection, inner threads, the function."""
    # A forked worker inherits the caller's handlers; Airflow's would make it ignore SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group; the caller handles it and then kills the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    mark_pool_worker()  # a map its calls start plans no processes, and waits for no slot
    # Pools loaded from now on size themselves from the environment (set for every start method:
    # a forked worker would keep the caller's); those already loaded are capped where asked.
    os.environ.update({name: str(inner_threads) for name in THREAD_ENV_VARS})
    if cap_loaded_pools:
        from threadpoolctl import threadpool_limits

        threadpool_limits(inner_threads)
    global _worker_function, _inner_threads
    _worker_function = cloudpickle.loads(function_bytes)
    _inner_threads = inner_threads


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if the caller dies, even by SIGKILL: no orphans."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_chunk_in_worker(first: int, chunk: list[Any]) -> Outcome:
    """Run a chunk with the function the initializer loaded, and report its peak memory (the
    process's own: a worker runs one chunk at a time); an error travels back with its traceback
    as text, and as a RuntimeError where it would not pickle."""
    assert _worker_function is not None, "the worker initializer did not run"
    peak = PeakMemory()
    peak.start()
    with inner_jobs(_inner_threads):  # a worker's share of the CPUs, as for its BLAS
        outcome = run_chunk(_worker_function, first, chunk)
    peak.stop()
    if outcome[0] == "error":
        _, index, error, _ = outcome
        remote = "".join(traceback.format_exception(error))
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:
            error = RuntimeError(f"{type(error).__qualname__}: {error}")
        return ("error", index, error, remote)
    return (*outcome[:-1], peak.bytes)
