"""The workers a parallel plan runs on: one small class per kind behind :class:`WorkerPool`.

The pooled loop (``pooled.py``) only submits chunks, collects them in order and stops the pool;
what differs by kind (how workers start and stop, which errors mean a worker died, what is
capped while they run) lives here and in ``process_pool.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..probes import blas_pools
from .chunks import run_chunk
from .nesting import in_a_map

if TYPE_CHECKING:
    from ..data.plan import Plan

__all__ = ["PoolSettings", "ThreadWorkers", "WorkerPool", "open_pool"]


@dataclass(frozen=True)
class PoolSettings:
    """What every pool is started with, besides the plan."""

    func: Callable[[Any], Any]
    cancel: threading.Event | None
    inner_threads: int  # BLAS/OpenMP threads each worker may run: its share of the CPUs
    cap_loaded_pools: bool  # whether pools the caller already loaded are capped (see run_plan)


class WorkerPool:
    """Workers that run chunks: submit, then shut down or abort."""

    backend: ClassVar[str]

    def submit(self, first: int, chunk: list[Any]) -> Future[Any]:
        raise NotImplementedError

    def starting(self) -> contextlib.AbstractContextManager[Any]:
        """Held around the first submits, where the workers start."""
        return contextlib.nullcontext()

    def running(self) -> contextlib.AbstractContextManager[Any]:
        """Held for the whole map."""
        return contextlib.nullcontext()

    def deaths(self, first: int, last: int) -> contextlib.AbstractContextManager[Any]:
        """Turns a dead worker's error into WorkerDiedError naming items ``first`` to ``last``."""
        return contextlib.nullcontext()

    def shutdown(self) -> None:
        raise NotImplementedError

    def abort(self, pending: list[Future[Any]]) -> None:
        """Stop at once: the map failed or was cancelled."""
        raise NotImplementedError


class ThreadWorkers(WorkerPool):
    """Threads of the caller on ``concurrent.futures``: they share its objects, so an error keeps
    its real traceback; they cannot be killed, so cancelling stops them between items."""

    backend = "threads"

    def __init__(self, plan: Plan, settings: PoolSettings) -> None:
        self._executor = ThreadPoolExecutor(plan.n_jobs, thread_name_prefix="amorsize")
        self._func = settings.func
        self._cancel = settings.cancel if settings.cancel is not None else threading.Event()
        self._inner_threads = settings.inner_threads
        self._cap = plan.n_jobs > 1 and settings.cap_loaded_pools

    def submit(self, first: int, chunk: list[Any]) -> Future[Any]:
        return self._executor.submit(_run_chunk_in_a_map, self._func, first, chunk, self._cancel)

    def running(self) -> contextlib.AbstractContextManager[Any]:
        return blas_pools.capped(self._inner_threads) if self._cap else contextlib.nullcontext()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    def abort(self, pending: list[Future[Any]]) -> None:
        for future in pending:
            future.cancel()
        self._cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)


def _run_chunk_in_a_map(
    func: Callable[[Any], Any], first: int, chunk: list[Any], cancel: threading.Event
) -> tuple[Any, ...]:
    with in_a_map():  # a map its calls start must not wait for this map's slots
        return run_chunk(func, first, chunk, cancel)


# The pool of each backend, imported when a plan first needs it (docs/decisions.md#import-cost).
_POOLS = {"threads": ".pools:ThreadWorkers", "processes": ".process_pool:ProcessWorkers"}


def open_pool(plan: Plan, settings: PoolSettings) -> WorkerPool:
    """Start the pool ``plan.backend`` names."""
    module, _, name = _POOLS[plan.backend].partition(":")
    pool: type[WorkerPool] = getattr(importlib.import_module(module, __package__), name)
    return pool(plan, settings)
