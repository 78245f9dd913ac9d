"""The public entry points: ``optimize``, ``execute``, ``run`` and ``imap``.

Each checks its arguments, prepares the map (``decide.prepare``: a stored plan, a previous run's
record, or a dry run, and the model) and runs it (``execution.map_iterator``)::

    execute(func, items)
      -> measure.limits       the CPUs and bytes this process may really use
      -> measure.dry_run      a few items run here; their results are kept
      -> decide.model         the cheapest candidate, with an honest estimated speedup
      -> execution.runner     the rest of the items; results in input order
      -> measure.record       what the run really cost: the next run's evidence
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .data.options import NOT_GIVEN, Options, check_callable, check_items, items_or_data
from .data.plan import Plan, RunRecord
from .decide.prepare import prepare
from .execution.map_iterator import MapIterator, MapRun
from .execution.progress import Progress
from .report.tables import plan_table

__all__ = ["MapIterator", "MapRun", "execute", "imap", "optimize", "run"]


def optimize(
    func: Callable[[Any], Any],
    items: Iterable[Any] = NOT_GIVEN,
    *,
    data: Iterable[Any] = NOT_GIVEN,
    verbose: bool = False,
    max_workers: int | None = None,
    memory_limit: int | str | None = None,
    sample_size: int | None = None,
    backend: str | None = None,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    history: RunRecord | Mapping[str, Any] | None = None,
) -> Plan:
    """Measure ``func`` on a few items and return the plan for mapping it over ``items``.

    The dry run calls ``func`` on the first items; their results are discarded here (use
    :func:`execute` or :func:`run` to keep them). An iterator loses the items the dry run read:
    pass a sequence.

    Args:
        func: a function of one item.
        items: the items the map will run over (``data=``, as the original Amorsize named it).
        verbose: print the plan and why, as the integrations log it.
        max_workers: at most this many workers, whatever the CPUs.
        memory_limit: plan within this many bytes (an int, or a string like ``"4G"``).
        sample_size: steady-state calls in the dry run; adaptive when None.
        backend: ``"serial"``, ``"threads"`` or ``"processes"`` to fix the backend.
        n_jobs, chunksize: fix the workers or the chunk size; the model chooses the rest.
        history: a previous run's :class:`RunRecord` (or its dict): when it is of the same
            function, the dry run is skipped and the plan starts from its measured costs.
    """
    check_callable(func)
    _check_verbose(verbose)
    options = Options.build(
        {key: value for key, value in locals().items() if key not in ("data", "verbose")}
    )
    plan = prepare(func, check_items(items_or_data(items, data)), options).plan
    if verbose:
        print(plan_table(plan), flush=True)
    return plan


def execute(
    func: Callable[[Any], Any],
    items: Iterable[Any] = NOT_GIVEN,
    *,
    data: Iterable[Any] = NOT_GIVEN,
    verbose: bool = False,
    plan: Plan | None = None,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    backend: str | None = None,
    progress: Progress = False,
    **optimize_options: Any,
) -> list[Any]:
    """Map ``func`` over ``items`` with the best plan, and return the results in input order.

    Without ``plan``, a short dry run measures ``func`` first; its results are kept, never
    computed twice. With ``plan`` (a stored one), nothing is measured.

    Args:
        func: a function of one item.
        items: a sequence or any iterable (a generator is read lazily); ``data=`` as well.
        verbose: print the plan, why, and what the run achieved.
        plan: a plan to follow instead of measuring.
        n_jobs, chunksize, backend: fix these settings; the model chooses the rest.
        progress: True for a progress bar, or a callable ``(done, total)``.
        **optimize_options: ``max_workers``, ``memory_limit``, ``sample_size``, ``history``.

    Raises:
        WorkerDiedError: a worker process died (segfault, OOM kill).
        MapCancelledError: the map was cancelled (SIGTERM).
        Exception: whatever ``func`` raised for an item, with a note naming the item.
    """
    return run(
        func,
        items_or_data(items, data),
        verbose=verbose,
        plan=plan,
        n_jobs=n_jobs,
        chunksize=chunksize,
        backend=backend,
        progress=progress,
        **optimize_options,
    ).results


def run(
    func: Callable[[Any], Any],
    items: Iterable[Any] = NOT_GIVEN,
    *,
    data: Iterable[Any] = NOT_GIVEN,
    verbose: bool = False,
    plan: Plan | None = None,
    progress: Progress = False,
    cancel: threading.Event | None = None,
    **options: Any,
) -> MapRun:
    """Like :func:`execute`, and also return the plan and the :class:`RunRecord` of the run.

    This is what the Airflow and Prefect integrations call: the record is the evidence the next
    scheduled run starts from. ``cancel``, when set from another thread or a signal handler,
    stops the map and kills its workers. ``verbose`` prints the plan and what the run achieved.
    """
    _check_verbose(verbose)
    items = items_or_data(items, data)
    iterator = imap(func, items, plan=plan, progress=progress, cancel=cancel, **options)
    chunks = iterator.chunks()
    results: list[Any] = next(chunks, [])  # the dry run's results: owned, not copied
    for chunk in chunks:
        results.extend(chunk)
    outcome = MapRun(results, iterator.plan, iterator)
    if verbose:
        print(plan_table(outcome.plan, outcome.record), flush=True)
    return outcome


def imap(
    func: Callable[[Any], Any],
    items: Iterable[Any] = NOT_GIVEN,
    *,
    data: Iterable[Any] = NOT_GIVEN,
    plan: Plan | None = None,
    progress: Progress = False,
    cancel: threading.Event | None = None,
    **options: Any,
) -> MapIterator:
    """A lazy iterator of ``func(item)`` in input order, with bounded memory.

    The dry run happens now, so ``.plan`` is known at once; ``.record`` once the iterator is
    exhausted. A serial plan the model chose is weighed again while it runs, if calls turn out
    far costlier than the dry run measured, and ``.plan`` then becomes the plan the rest ran
    with. Closing the iterator early (or leaving a ``for`` loop) stops the workers.
    """
    check_callable(func)
    checked = Options.build(options)
    if plan is not None and not isinstance(plan, Plan):
        raise TypeError(f"`plan` must be an amorsize_flows.Plan or None, got {type(plan).__name__}")
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"`progress` must be a bool or a callable (done, total), got {progress!r}")
    if cancel is not None and not isinstance(cancel, threading.Event):
        raise TypeError(f"`cancel` must be a threading.Event or None, got {type(cancel).__name__}")
    started = time.perf_counter()
    prepared = prepare(func, check_items(items_or_data(items, data)), checked, plan)
    return MapIterator(func, prepared, started, progress, cancel)


def _check_verbose(verbose: object) -> None:
    if not isinstance(verbose, bool):
        raise TypeError(f"`verbose` must be True or False, got {verbose!r}")
