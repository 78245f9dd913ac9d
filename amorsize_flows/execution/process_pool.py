"""Process workers on loky: forked where the caller is single-threaded (cheapest, and the workers
inherit the warm state of the dry run), else loky's fresh interpreter, which does not re-import
``__main__`` (a DAG file or flow script that imports an orchestrator). The function travels once
per worker, through the initializer, not once per chunk.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import cloudpickle
import loky
from loky.backend.context import get_context
from loky.process_executor import BrokenProcessPool, TerminatedWorkerError

from ..data.errors import WorkerDiedError
from ..probes import blas_pools
from ..probes.processes import fork_is_safe
from .pools import PoolSettings, WorkerPool
from .worker_process import init_worker, run_chunk_in_worker

if TYPE_CHECKING:
    from ..data.plan import Plan

__all__ = ["ProcessWorkers"]

log = logging.getLogger(__name__)


class ProcessWorkers(WorkerPool):
    """A loky pool. Forked workers inherit the caller's BLAS pools capped, and asleep, for the
    whole map (docs/decisions.md#blas-pools-in-workers); fresh ones cap their own."""

    backend = "processes"

    def __init__(self, plan: Plan, settings: PoolSettings) -> None:
        start_method = _start_method(plan)
        self._forks = start_method == "fork"
        self._inner_threads = settings.inner_threads
        with warnings.catch_warnings():
            # loky warns that fork "does not respect POSIX" for multi-threaded callers; we fork
            # only when the caller is single-threaded (fork_is_safe).
            warnings.filterwarnings(
                "ignore", message=".*fork.*start method.*", category=UserWarning
            )
            context = get_context(start_method)
        self._executor = loky.ProcessPoolExecutor(
            max_workers=plan.n_jobs,
            context=context,
            initializer=init_worker,
            initargs=(cloudpickle.dumps(settings.func), settings.inner_threads, not self._forks),
        )

    def submit(self, first: int, chunk: list[Any]) -> Future[Any]:
        return self._executor.submit(run_chunk_in_worker, first, chunk)

    def starting(self) -> contextlib.AbstractContextManager[Any]:
        stack = contextlib.ExitStack()
        stack.enter_context(_heap_frozen())
        stack.enter_context(_children_allowed())
        return stack

    def running(self) -> contextlib.AbstractContextManager[Any]:
        if self._forks:
            return blas_pools.capped(self._inner_threads)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def deaths(self, first: int, last: int) -> Iterator[None]:
        try:
            yield
        except TerminatedWorkerError as error:
            raise WorkerDiedError(
                f"A worker process died while the map ran items {first} to {last} ({error}). "
                f"An exit code of -9 (SIGKILL) usually means the OOM killer: lower "
                f"`max_workers` or `memory_limit`, or use backend='threads'. A segfault (-11) "
                f"points at a C extension in the mapped function."
            ) from error
        except BrokenProcessPool as error:
            raise WorkerDiedError(
                f"The worker pool broke while the map ran items {first} to {last} ({error}). "
                f"Results and arguments must survive pickling; return plain values."
            ) from error

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    def abort(self, pending: list[Future[Any]]) -> None:
        # loky fails the pending futures itself; cancelling them first races its manager thread.
        self._executor.shutdown(wait=True, kill_workers=True)


def _start_method(plan: Plan) -> str:
    start_method = plan.start_method or ("fork" if fork_is_safe() else "loky")
    if start_method == "fork" and not fork_is_safe():
        log.warning(
            "The plan asks for fork, but %d threads are alive in this process; using loky's "
            "fresh-interpreter workers instead, since forking a threaded process can deadlock.",
            threading.active_count(),
        )
        start_method = "loky"
    return start_method


@contextlib.contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process (a Celery or Dask worker) start the pool's workers.

    ``multiprocessing`` refuses children to a daemonic process so that none outlives a parent
    that will not wait for it; these never do: the pool is shut down or its workers killed on
    every way out of the map, and each worker dies with its parent (``PR_SET_PDEATHSIG``).
    (docs/decisions.md#processes-in-daemonic-workers)
    """
    config = multiprocessing.current_process()._config  # where the refusal looks
    if not config.get("daemon"):
        yield
        return
    config["daemon"] = False
    try:
        yield
    finally:
        config["daemon"] = True


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Fork workers with the caller's objects out of the cyclic collector's reach, so that a
    worker's first collection does not copy the caller's heap into it (CPython's gc.freeze
    advice before fork; docs/decisions.md#frozen-heap). A caller that froze objects itself is
    left alone."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
