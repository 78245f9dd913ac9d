"""Run a plan: serial, threads or processes, results in input order, nothing left behind.

Processes run on loky: ``fork`` when the caller is single-threaded (cheapest, and workers inherit
the warm state of the dry run), else loky's own start method, a fresh interpreter that does not
re-import ``__main__`` (a DAG file or flow script that imports Airflow or Prefect would cost every
spawned worker seconds). The function travels once per worker, through the initializer, not once
per chunk. At most a few chunks per worker are in flight, so memory stays bounded for long inputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import logging
import operator
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import cloudpickle
import loky
from loky.backend.context import get_context
from loky.process_executor import BrokenProcessPool, TerminatedWorkerError
from threadpoolctl import threadpool_limits

from . import blas_pools, in_flight, run_queue
from .errors import MapCancelledError, WorkerDiedError
from .gc_pauses import CollectionTime

if TYPE_CHECKING:
    from .plan import Plan

__all__ = ["ProgressCallback", "RunStats", "fork_is_safe", "run_plan"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, "int | None"], None]


class Replanner(Protocol):
    """Weighs a serial map again between its batches."""

    def __call__(self, done: int, batch_items: int, batch_seconds: float) -> Plan | None:
        """A plan for the rest of the map, told the items done so far and the last batch's items
        and seconds; or None to go on serially."""

    def alarm(self) -> tuple[float, float] | None:
        """(seconds per call, seconds): once a batch's calls so far took at least both, it is
        cut short and weighed at once; None where calls are too quick to read a clock after each.
        """

    def awaits_batch(self) -> bool:
        """Whether it waits for the next batch to decide: the rest may not run unweighed."""


# A serial batch grows until it takes about this long: long enough that the loop's bookkeeping is
# invisible, short enough that cancellation and progress stay prompt.
SERIAL_BATCH_SECONDS = 0.05
# Without cancellation or progress to serve, serial batches grow this many times each: six
# batches for a million cheap items, so the plan is checked early for a few microseconds a batch.
SERIAL_BATCH_GROWTH = 4
# How often a wait checks for cancellation: fast enough for a person, rare enough to cost nothing.
CANCEL_POLL_SECONDS = 0.1
# Environment variables that cap the thread pools of BLAS and OpenMP libraries not yet loaded.
_THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


@dataclass
class RunStats:
    """What the map measured, filled in while it runs."""

    items: int = 0
    compute_seconds: float = 0.0
    cpu_seconds: float = 0.0
    queued_seconds: float = 0.0  # of compute_seconds: ready to run, not running (run_queue)
    startup_seconds: float = 0.0
    started_at: float = field(default_factory=time.perf_counter)
    finished_at: float = 0.0
    _workers_started_at: float | None = None
    _first_result: bool = True

    def workers_start(self) -> None:
        """Workers start now, after serial batches: what their first result waits for is their
        start-up, which the next run's plan learns from."""
        self._workers_started_at = time.perf_counter()
        self._first_result = True

    def add_chunk(
        self, n_items: int, compute_seconds: float, cpu_seconds: float, queued_seconds: float
    ) -> None:
        if self._first_result:
            self._first_result = False
            waited = time.perf_counter() - (self._workers_started_at or self.started_at)
            self.startup_seconds = max(0.0, waited - compute_seconds)
        self.items += n_items
        self.compute_seconds += compute_seconds
        self.cpu_seconds += cpu_seconds
        self.queued_seconds += queued_seconds

    @property
    def cpu_ratio(self) -> float:
        """CPU seconds per wall second of the calls, their waits for a CPU counted as busy, as
        the dry run reads it (run_queue.cpu_ratio); 1.0 before any call was timed."""
        return run_queue.cpu_ratio(self.cpu_seconds, self.compute_seconds, self.queued_seconds)


def fork_is_safe() -> bool:
    """Forking copies only the calling thread: with other threads alive, a lock they held stays
    held forever in the child. Fork only from a single-threaded process."""
    return hasattr(os, "fork") and threading.active_count() == 1


def run_plan(
    plan: Plan,
    func: Callable[[Any], Any],
    items: Iterator[Any],
    *,
    start_index: int = 0,
    stats: RunStats | None = None,
    cancel: threading.Event | None = None,
    on_chunk: Callable[[int], None] | None = None,
    cpus: int | None = None,
    into: list[Any] | None = None,
    replan: Replanner | None = None,
    cap_loaded_pools: bool = True,
) -> Iterator[list[Any]]:
    """Yield the results of ``func(item)`` in order, a list per chunk, as ``plan`` says.

    Args:
        plan: the backend, workers and chunk size to use.
        func: the function of one item.
        items: the items, consumed lazily.
        start_index: the index of the first item, for error notes.
        stats: filled in with what the map measured.
        cancel: when set, the map stops, its workers are killed, and MapCancelledError is raised.
        on_chunk: called with the number of items of every finished chunk (progress).
        cpus: the CPUs this worker may use; BLAS/OpenMP threads are capped to each worker's share.
        into: for a serial plan, a list (the dry run's results) that the first batch extends and
            is yielded as, instead of a new list: a long cheap map's results are not copied.
        replan: for a serial plan, asked between batches whether the rest should run in
            parallel after all (calls turned out slower than the dry run measured).
        cap_loaded_pools: whether BLAS/OpenMP pools the caller has already loaded are capped
            in the caller during a threads map (pools loaded later always are). threadpoolctl
            scans the loaded libraries to do it (about 1 ms), so False where the function was
            seen not to run threads of its own. Process workers are always capped: in the
            caller while they fork (they inherit the cap, and their pools stay asleep), or in a
            fresh interpreter by itself.

    Raises:
        WorkerDiedError: a worker process died.
        MapCancelledError: ``cancel`` was set.
        Exception: whatever ``func`` raised, with a note naming the item.
    """
    stats = stats if stats is not None else RunStats()
    stats.started_at = time.perf_counter()
    try:
        if plan.backend == "serial":
            first_batch = [] if into is None else into
            serial = _serial(func, items, start_index, stats, cancel, on_chunk, first_batch, replan)
            switched = yield from serial
            if switched is None:
                return
            plan, start_index = switched
            # The serial plan's limits may have been an upper bound; the new plan's were all read.
            cpus = plan.limits.get("cpus", cpus)
            stats.workers_start()
        share = max(1, (cpus or os.cpu_count() or 1) // plan.n_jobs)
        yield from _pooled(
            plan, func, items, start_index, stats, cancel, on_chunk, share, cap_loaded_pools
        )
    finally:
        stats.finished_at = time.perf_counter()


def _serial(
    func: Callable[[Any], Any],
    items: Iterator[Any],
    start_index: int,
    stats: RunStats,
    cancel: threading.Event | None,
    on_chunk: Callable[[int], None] | None,
    first_batch: list[Any],
    replan: Replanner | None,
) -> Generator[list[Any], None, tuple[Plan, int] | None]:
    """Run in the caller, batch after batch, each appended to ``results`` (_extend).
    Return None once every item is done, or the plan ``replan`` chose between two batches for the
    items left, with the index of the first of them.

    Batches start at the dry run's size and grow SERIAL_BATCH_GROWTH times each, or, to keep
    cancellation and progress prompt, until one takes about SERIAL_BATCH_SECONDS. Items that know
    their length (a list) fill one list, ``first_batch``; others are yielded batch by batch, so
    memory stays bounded. ``replan`` is told each batch's time without the garbage collector's:
    any plan pays that, since the results are built in the caller either way; a batch whose calls
    prove slow enough to be weighed again ends there (Replanner.alarm).
    """
    prompt = cancel is not None or on_chunk is not None
    one_list = hasattr(items, "__length_hint__")
    results, size, index = first_batch, max(1, start_index), start_index
    switched: tuple[Plan, int] | None = None
    # Building 100k dicts in a caller that had imported numpy, a batch ran 4 times slower per
    # call than the dry run's, paused by collections, which sent the rest of a 46 ms map to
    # processes (109 ms).
    collections = CollectionTime()
    with collections if replan is not None else contextlib.nullcontext():
        while switched is None:
            if cancel is not None and cancel.is_set():
                raise MapCancelledError(f"the map was cancelled before item {index}")
            # islice costs ~3 ns a call (4% of a cheap one): a list's last stretch goes without.
            # Batches are there for re-planning, cancelling and progress: with none of them to
            # serve, the whole list is that stretch. Re-planning alone ends them once the next
            # would take a quarter of the rest, unless it waits for that batch.
            weighing = replan is not None and (
                replan.awaits_batch() or SERIAL_BATCH_GROWTH * size < operator.length_hint(items)
            )
            last = one_list and not prompt and not weighing
            batch = items if last else itertools.islice(items, size)
            alarm = None if last or replan is None else replan.alarm()
            mark = run_queue.mark()  # releases the GIL: before the clocks
            started, cpu_before = time.perf_counter(), time.process_time()
            collected_before = collections.seconds
            done = _extend(results, func, batch, index, alarm)
            if done == 0:
                break
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
            stats.add_chunk(done, elapsed, cpu, run_queue.queued_since(mark, elapsed, cpu))
            index += done
            if on_chunk is not None:
                on_chunk(done)
            if last:
                break  # every item is done: nothing left to weigh again
            if replan is not None:
                working = elapsed - (collections.seconds - collected_before)
                plan = replan(index, done, working)
                if plan is not None:
                    switched = (plan, index)
                    break
            if not one_list:
                yield results
                results = []
            if alarm is not None and done < size:
                # Cut short by slow calls, and not switched (their mean diluted by the quick
                # calls before them): the next batch is no longer, or grown to a quarter of the
                # rest it would run the rest unweighed (1 run in 6 of a step from 20 µs to 3 ms).
                size = done
            elif not prompt:
                size *= SERIAL_BATCH_GROWTH
            elif elapsed < SERIAL_BATCH_SECONDS / 2:
                size *= 2
            elif elapsed > SERIAL_BATCH_SECONDS * 2:
                size = max(1, size // 2)
    if results or results is first_batch:
        yield results
    return switched


def _extend(
    results: list[Any],
    func: Callable[[Any], Any],
    batch: Iterator[Any],
    first: int,
    alarm: tuple[float, float] | None = None,
) -> int:
    """Append ``func(item)`` for each item of ``batch`` to ``results``; return how many were
    added, or raise with the failing item named.

    A Python loop, not ``results.extend(map(func, batch))``: CPython (3.11 on) runs a Python
    function called from Python code in the same evaluation loop, where map() enters a new one
    for every call. On 300k calls of 0.2 µs, map took 8.8% more CPU time than a list
    comprehension, this loop 3.8% (300 alternating rounds in one process; 0.7 to 2.2% in two
    runs of 150 on a later day; 5 to 6% through run_plan in benchmarks.serial_floor). Nor a
    comprehension per batch: joining the batches into one list took 16 to 19% more there, each
    result's reference touched again, out of cache. A user's plain loop is the peer a cheap
    serial map is measured against.

    With an ``alarm`` (Replanner.alarm), a call at a time, and only until the calls so far took
    at least that long: a batch of 4 whose second and third items took 20 ms each, against
    0.2 ms planned, ran both before the map was weighed again, where one showed enough.
    """
    before = len(results)
    try:
        if alarm is None:
            for item in batch:
                results.append(func(item))
        else:
            per_call, at_least = alarm
            started = time.perf_counter()
            for calls, item in enumerate(batch, 1):
                results.append(func(item))
                elapsed = time.perf_counter() - started
                if elapsed >= at_least and elapsed >= per_call * calls:
                    break
    except Exception as error:
        # What was appended before the error is kept: the failing item came next.
        error.add_note(f"amorsize: raised by item {first + len(results) - before}")
        raise
    return len(results) - before


def _pooled(
    plan: Plan,
    func: Callable[[Any], Any],
    items: Iterator[Any],
    start_index: int,
    stats: RunStats,
    cancel: threading.Event | None,
    on_chunk: Callable[[int], None] | None,
    inner_threads: int,
    cap_loaded_pools: bool,
) -> Iterator[list[Any]]:
    chunks = _chunks(items, plan.chunksize, start_index)
    # The caller's pools are capped around the whole map (threads, forked workers); its heap is
    # frozen around the first submits, where loky starts every worker.
    during_map: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    while_forking: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if plan.backend == "threads":
        executor: Executor = ThreadPoolExecutor(plan.n_jobs, thread_name_prefix="amorsize")
        submit = _thread_submitter(executor, func, cancel)
        if plan.n_jobs > 1 and cap_loaded_pools:
            during_map = blas_pools.capped(inner_threads)
    else:
        start_method = _start_method(plan)
        forks = start_method == "fork"
        # A forked worker inherits the caller's pools as they are at the fork: capped there, they
        # stay asleep. Capped inside the worker, OpenBLAS re-creates its threads, and they spin
        # for ~0.1 s against the worker's first chunk. Fresh interpreters cap their own.
        # Whatever the dry run read (cap_loaded_pools): from one steady call, 300x300 numpy
        # products read as one busy thread in 2 fresh dry runs of 8, and two forked workers then
        # ran two BLAS threads each on 2 CPUs: 1.2 to 1.4 s for 120 products, 0.3 s capped.
        # Restored when the map ends, not once the workers exist: a restore after a fork
        # re-creates OpenBLAS's threads, which spin about 0.1 s of CPU, against the workers
        # while they run (a 0.8 s map of costs sorted from 6 ms down took 0.88 to 0.90 of the
        # time with the cap held to the end, in fresh-process pairs), or after the map, where
        # the next dry run waits them out (blas_pools.settle). The caller waits for results
        # meanwhile; its own BLAS work between lazy results runs on its share of the CPUs.
        executor = _process_executor(plan.n_jobs, start_method, func, inner_threads, not forks)
        submit = _process_submitter(executor)
        while_forking = _heap_frozen()
        if forks:
            during_map = blas_pools.capped(inner_threads)
    pending: deque[tuple[int, int, Future[Any]]] = deque()
    window = plan.n_jobs * _in_flight_per_worker(plan)
    finished = False
    try:
        with during_map:
            with while_forking:
                for first, chunk in itertools.islice(chunks, window):
                    pending.append((first, len(chunk), submit(first, chunk)))
            while pending:
                first, size, future = pending.popleft()
                results, compute, cpu, queued = _collect(future, first, size, cancel, plan)
                stats.add_chunk(size, compute, cpu, queued)
                if on_chunk is not None:
                    on_chunk(size)
                for first_next, chunk in itertools.islice(chunks, 1):
                    # A worker that died since makes loky refuse the chunk: say which were running.
                    running = pending[0][0] if pending else first_next
                    with _worker_deaths(running, first_next - 1):
                        pending.append((first_next, len(chunk), submit(first_next, chunk)))
                yield results
        finished = True
    finally:
        if finished:
            executor.shutdown(wait=True)
        else:
            _abort(executor, pending, cancel)


def _in_flight_per_worker(plan: Plan) -> int:
    """Chunks each worker may have submitted and not yet yielded (in_flight), from the plan's
    measured item and result sizes."""
    profile = plan.profile
    item_bytes = profile.get("bytes_in_per_item", 0.0) + profile.get("bytes_out_per_item", 0.0)
    return in_flight.chunks_per_worker(plan.chunksize, item_bytes)


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Fork workers with the caller's objects moved out of the cyclic garbage collector's reach.

    A loky worker runs gc.collect() after its first task; in a forked worker that walks every
    object inherited from the caller and writes to each one's header, so each worker copies every
    page of the caller's heap: CPU, memory, and cache the tasks then compete for (the skewed shape
    ran 12% behind Pool().map, whose workers never collect; 5% with this). Frozen objects stay
    shared, as CPython's gc.freeze documentation recommends before fork; the caller unfreezes
    them once the workers exist. A caller that froze objects itself is left alone.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _chunks(items: Iterator[Any], size: int, start_index: int) -> Iterator[tuple[int, list[Any]]]:
    index = start_index
    while chunk := list(itertools.islice(items, size)):
        yield index, chunk
        index += len(chunk)


@contextlib.contextmanager
def _worker_deaths(first: int, last: int) -> Iterator[None]:
    """loky's broken-pool errors as WorkerDiedError, naming the items that were running."""
    try:
        yield
    except TerminatedWorkerError as error:
        raise WorkerDiedError(
            f"A worker process died while the map ran items {first} to {last} ({error}). An exit "
            f"code of -9 (SIGKILL) usually means the OOM killer: lower `max_workers` or "
            f"`memory_limit`, or use backend='threads'. A segfault (-11) points at a C extension "
            f"in the mapped function."
        ) from error
    except BrokenProcessPool as error:
        raise WorkerDiedError(
            f"The worker pool broke while the map ran items {first} to {last} ({error}). "
            f"Results and arguments must survive pickling; return plain values."
        ) from error


def _collect(
    future: Future[Any], first: int, size: int, cancel: threading.Event | None, plan: Plan
) -> tuple[list[Any], float, float, float]:
    while not future.done():
        if cancel is not None and cancel.is_set():
            raise MapCancelledError(f"the map was cancelled while items {first}.. were running")
        wait_for([future], timeout=CANCEL_POLL_SECONDS)
    with _worker_deaths(first, first + size - 1):
        outcome = future.result()
    if outcome[0] == "error":
        _, index, raised, remote_traceback = outcome
        raised.add_note(f"amorsize: raised by item {index} in a {plan.backend} worker")
        if remote_traceback:
            raised.add_note(f"Traceback in the worker:\n{remote_traceback}")
        raise raised
    _, results, compute, cpu, queued = outcome
    return results, compute, cpu, queued


def _abort(
    executor: Executor, pending: deque[tuple[int, int, Future[Any]]], cancel: threading.Event | None
) -> None:
    """Stop at once: kill the workers, or cancel what has not started on threads."""
    if isinstance(executor, loky.ProcessPoolExecutor):
        # loky fails the pending futures itself; cancelling them first races its manager thread.
        executor.shutdown(wait=True, kill_workers=True)
    else:
        for _, _, future in pending:
            future.cancel()
        # Threads cannot be killed: the chunks stop between items once `cancel` is set.
        if cancel is not None:
            cancel.set()
        executor.shutdown(wait=True, cancel_futures=True)


def _run_chunk(
    func: Callable[[Any], Any], first: int, chunk: list[Any], cancel: threading.Event | None = None
) -> tuple[Any, ...]:
    """Run one chunk; return ("ok", results, wall, cpu, queued for a CPU) or ("error", index,
    error, traceback)."""
    results = []
    clock = (
        time.thread_time
        if threading.current_thread() is not threading.main_thread()
        else time.process_time
    )
    mark = run_queue.mark()  # releases the GIL: before the clocks
    cpu_before, started = clock(), time.perf_counter()
    for offset, item in enumerate(chunk):
        if cancel is not None and cancel.is_set():
            return ("error", first + offset, MapCancelledError("the map was cancelled"), "")
        try:
            results.append(func(item))
        except Exception as error:
            return ("error", first + offset, error, "")
    wall, cpu = time.perf_counter() - started, clock() - cpu_before
    return ("ok", results, wall, cpu, run_queue.queued_since(mark, wall, cpu))


def _thread_submitter(
    executor: Executor, func: Callable[[Any], Any], cancel: threading.Event | None
) -> Callable[[int, list[Any]], Future[Any]]:
    # Threads share the caller's objects: an error keeps its real traceback, no text needed.
    own_cancel = cancel if cancel is not None else threading.Event()
    return lambda first, chunk: executor.submit(_run_chunk, func, first, chunk, own_cancel)


# --- process workers -----------------------------------------------------------------------------

_worker_function: Callable[[Any], Any] | None = None


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


def _process_executor(
    n_jobs: int,
    start_method: str,
    func: Callable[[Any], Any],
    inner_threads: int,
    cap_loaded_pools: bool,
) -> Executor:
    with warnings.catch_warnings():
        # loky warns that fork "does not respect POSIX" for multi-threaded callers; we fork only
        # when the caller is single-threaded (fork_is_safe above).
        warnings.filterwarnings("ignore", message=".*fork.*start method.*", category=UserWarning)
        context = get_context(start_method)
    return loky.ProcessPoolExecutor(
        max_workers=n_jobs,
        context=context,
        initializer=_init_worker,
        initargs=(cloudpickle.dumps(func), inner_threads, cap_loaded_pools),
    )


def _process_submitter(executor: Executor) -> Callable[[int, list[Any]], Future[Any]]:
    return lambda first, chunk: executor.submit(_run_chunk_in_worker, first, chunk)


def _init_worker(function_bytes: bytes, inner_threads: int, cap_loaded_pools: bool) -> None:
    """Prepare a worker process: signals, orphan protection, inner threads, the function."""
    # A forked worker inherits the caller's handlers; Airflow's would make it ignore SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group; the caller handles it and then kills the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    # Pools loaded before this runs (a fresh interpreter importing the caller's main module) are
    # capped now where asked (forked workers inherit theirs capped: _forking); one loaded later
    # (numpy imported by unpickling the function below, or inside it, as when a stored plan
    # skipped the dry run) sizes itself from the environment. Set here for every start method:
    # loky's own `env=` reaches only its fresh interpreters, and a forked worker would keep the
    # caller's.
    os.environ.update({name: str(inner_threads) for name in _THREAD_ENV_VARS})
    if cap_loaded_pools:
        threadpool_limits(inner_threads)
    global _worker_function
    _worker_function = cloudpickle.loads(function_bytes)


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if the caller dies, even by SIGKILL: no orphans."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _run_chunk_in_worker(first: int, chunk: list[Any]) -> tuple[Any, ...]:
    assert _worker_function is not None, "the worker initializer did not run"
    outcome = _run_chunk(_worker_function, first, chunk)
    if outcome[0] == "error":
        _, index, error, _ = outcome
        remote = "".join(traceback.format_exception(error))
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:  # an exception that cannot travel back is described instead
            error = RuntimeError(f"{type(error).__qualname__}: {error}")
        return ("error", index, error, remote)
    return outcome
