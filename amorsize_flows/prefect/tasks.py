"""``@amorsize_task``: a Prefect task that maps a function of one item with the right parallel plan.

>>> from prefect import flow
>>> from amorsize_flows.prefect import amorsize_task
>>> @amorsize_task(retries=2)             # every @task option passes through
... def featurize(image, size=64):
...     return extract(image, size)
>>> @flow
... def pipeline(images):
...     return featurize(images, size=128)  # one task run; a list of results, in input order

Each run of the task is a real Prefect task run. Inside it, amorsize measures the function on a few
items (or starts from the previous run's record, kept in a Prefect Variable), picks serial, threads
or processes, the workers and the chunk size, maps the rest, and publishes the plan and what the
run cost as the table artifact ``amorsize-<task-name>``.

Running inside Prefect's engine:

- Tasks run in a process that has several threads (Prefect's engine, its log and event workers,
  the thread-pool task runner): forking there can deadlock, so process workers are loky's fresh
  interpreters (they do not re-import a flow script run as ``__main__``). What they cost to start is
  measured and shown in the artifact.
- A background thread watches the flow run: when it is Cancelling or Cancelled (the UI's Cancel
  button, ``prefect flow-run cancel``, a runner's kill), the map stops, its worker processes are
  killed, and the task run ends Cancelled (not retried). SIGTERM and Prefect's task timeouts reach
  the map as exceptions, which kill the workers on the way out.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, overload

from prefect import Task
from prefect.context import TaskRunContext
from prefect.states import Cancelled, State

from ..api import imap
from ..data.errors import MapCancelledError
from ..data.options import PLAN_SETTINGS, check_options
from ..measure.identity import function_identity
from ..report.tables import plan_table
from . import _history
from ._logs import forward_core_logs, run_logger
from ._watcher import Watcher
from .artifacts import ProgressReporter, artifact_key, publish_plan

__all__ = ["AmorsizeTask", "amorsize_task"]

log = logging.getLogger(__name__)

# The name of the task's first parameter, the items to map; the function's other parameters follow.
ITEMS_PARAMETER = "items"
# Characters of the function's digest in the task key: as many as Prefect's own task keys carry.
TASK_KEY_DIGEST_CHARS = 10


class _Unset:
    """The default of ``with_options`` arguments: keep the task's current setting."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class MapOptions:
    """How an amorsize task plans its map (the core's options), and what it keeps between runs.

    Attributes:
        max_workers, memory_limit, sample_size, backend, n_jobs, chunksize: passed to
            :func:`amorsize_flows.run`; see there.
        history: True keeps the last good run in the Prefect Variable ``amorsize-<task-name>`` and
            starts the next run from it; a string names another Variable; False keeps nothing.
        progress: True always publishes a progress artifact, False never, None (the default) only
            for maps predicted to take at least a few seconds.
    """

    max_workers: int | None = None
    memory_limit: int | str | None = None
    sample_size: int | None = None
    backend: str | None = None
    n_jobs: int | None = None
    chunksize: int | None = None
    history: bool | str = True
    progress: bool | None = None

    def __post_init__(self) -> None:
        check_options(self.core_options())
        if not isinstance(self.history, bool):
            _history.check_variable_name(self.history)
        if self.progress is not None and not isinstance(self.progress, bool):
            raise TypeError(f"`progress` must be True, False or None, got {self.progress!r}")

    def core_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`amorsize_flows.imap` that are set."""
        return {
            name: getattr(self, name) for name in PLAN_SETTINGS if getattr(self, name) is not None
        }

    def variable(self, task_name: str) -> str | None:
        """The Variable that keeps the last good run of the task, or None when not kept."""
        if self.history is False:
            return None
        return _history.variable_name(task_name) if self.history is True else self.history


_OPTION_NAMES = frozenset(f.name for f in fields(MapOptions))


class AmorsizeTask(Task[..., list[Any]]):
    """A Prefect task whose run maps ``item_fn`` over its first argument with an amorsize plan.

    Build it with :func:`amorsize_task`. It is a :class:`prefect.Task` in every other way: its
    name, description, source hash (caching) and task key come from ``item_fn``; ``.submit()``,
    ``.map()`` (over batches), ``.with_options()`` and every task runner work as usual.

    Attributes:
        item_fn: the function of one item.
        map_options: how the map is planned, and what is kept between runs.
    """

    item_fn: Callable[..., Any]
    map_options: MapOptions

    def __init__(
        self,
        item_fn: Callable[..., Any],
        *,
        map_options: MapOptions | None = None,
        **task_options: Any,
    ) -> None:
        """Wrap ``item_fn``; ``task_options`` go to :class:`prefect.Task` unchanged."""
        _check_item_fn(item_fn)
        options = map_options if map_options is not None else MapOptions()
        if not isinstance(options, MapOptions):
            raise TypeError(f"`map_options` must be a MapOptions, got {type(options).__name__}")
        super().__init__(fn=_mapper(item_fn, options), **task_options)
        self._bind(item_fn, options)

    def with_options(  # type: ignore[override]
        self,
        *,
        max_workers: int | None = UNSET,
        memory_limit: int | str | None = UNSET,
        sample_size: int | None = UNSET,
        backend: str | None = UNSET,
        n_jobs: int | None = UNSET,
        chunksize: int | None = UNSET,
        history: bool | str = UNSET,
        progress: bool | None = UNSET,
        **task_options: Any,
    ) -> AmorsizeTask:
        """A copy with some map options and some Prefect task options changed.

        Map options left out keep their value; ``task_options`` are those of
        :meth:`prefect.Task.with_options`, handled by Prefect itself.
        """
        given: dict[str, Any] = {
            "max_workers": max_workers,
            "memory_limit": memory_limit,
            "sample_size": sample_size,
            "backend": backend,
            "n_jobs": n_jobs,
            "chunksize": chunksize,
            "history": history,
            "progress": progress,
        }
        options = replace(
            self.map_options, **{name: value for name, value in given.items() if value is not UNSET}
        )
        task = super().with_options(**task_options)
        # Prefect's with_options builds a plain Task from every option it knows (including those
        # of later releases); making that object ours keeps Prefect in charge of its options.
        task.__class__ = type(self)
        assert isinstance(task, AmorsizeTask)
        task._bind(self.item_fn, options)
        return task

    def _bind(self, item_fn: Callable[..., Any], options: MapOptions) -> None:
        self.item_fn = item_fn
        self.map_options = options
        self.fn = _mapper(item_fn, options)
        # Prefect keys a task by its function's code; ours is the same wrapper for every task.
        self.task_key = (
            f"{item_fn.__name__}-{function_identity(item_fn)[1][:TASK_KEY_DIGEST_CHARS]}"
        )

    def __repr__(self) -> str:
        return f"AmorsizeTask(name={self.name!r}, item_fn={self.item_fn!r}, {self.map_options})"


@overload
def amorsize_task(
    item_fn: Callable[..., Any],
    /,
) -> AmorsizeTask: ...


@overload
def amorsize_task(
    item_fn: None = None,
    /,
    *,
    max_workers: int | None = None,
    memory_limit: int | str | None = None,
    sample_size: int | None = None,
    backend: str | None = None,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    history: bool | str = True,
    progress: bool | None = None,
    **task_options: Any,
) -> Callable[[Callable[..., Any]], AmorsizeTask]: ...


def amorsize_task(
    item_fn: Callable[..., Any] | None = None,
    /,
    *,
    max_workers: int | None = None,
    memory_limit: int | str | None = None,
    sample_size: int | None = None,
    backend: str | None = None,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    history: bool | str = True,
    progress: bool | None = None,
    **task_options: Any,
) -> AmorsizeTask | Callable[[Callable[..., Any]], AmorsizeTask]:
    """Make a function of one item a Prefect task that maps it over a list of items.

    Use it bare (``@amorsize_task``) or with options (``@amorsize_task(retries=2, max_workers=4)``).
    Calling the task with the items first, and the function's other arguments by keyword, runs one
    task run that returns the list of results in input order.

    Args:
        item_fn: the function of one item (when used bare).
        max_workers: at most this many workers, whatever the CPUs.
        memory_limit: plan within this many bytes (an int, or a string like ``"4G"``).
        sample_size: steady-state calls in the dry run; adaptive when None.
        backend: ``"serial"``, ``"threads"`` or ``"processes"`` to fix the backend.
        n_jobs, chunksize: fix the workers or the chunk size; amorsize chooses the rest.
        history: keep the last good run in the Prefect Variable ``amorsize-<task-name>`` (True),
            in the Variable named here (a string), or nowhere (False).
        progress: publish a progress artifact always (True), never (False), or for long maps.
        **task_options: any option of :func:`prefect.task` (``retries``, ``cache_policy``,
            ``timeout_seconds``, ``tags``, ``log_prints``, ...), passed through unchanged.

    Raises:
        TypeError: ``item_fn`` is not a function of one item, or an option has the wrong type.
        ValueError: an option is out of range.
    """
    options = MapOptions(
        max_workers=max_workers,
        memory_limit=memory_limit,
        sample_size=sample_size,
        backend=backend,
        n_jobs=n_jobs,
        chunksize=chunksize,
        history=history,
        progress=progress,
    )

    def decorate(fn: Callable[..., Any]) -> AmorsizeTask:
        return AmorsizeTask(fn, map_options=options, **task_options)

    return decorate(item_fn) if item_fn is not None else decorate


# --- the task's function: the signature Prefect sees, and the map it runs ------------------------


def _check_item_fn(item_fn: object) -> None:
    if isinstance(item_fn, Task):
        raise TypeError(
            f"@amorsize_task wraps a plain function of one item, got the Prefect task "
            f"{item_fn.name!r}; put @amorsize_task in place of @task"
        )
    if not callable(item_fn):
        raise TypeError(f"@amorsize_task needs a function of one item, got {item_fn!r}")
    if inspect.iscoroutinefunction(item_fn) or inspect.isasyncgenfunction(item_fn):
        raise TypeError(
            f"@amorsize_task maps {getattr(item_fn, '__name__', item_fn)!r} in threads or "
            f"processes, which call it synchronously; an async function cannot be mapped that way"
        )
    _map_signature(item_fn)  # raises on a function that cannot take one item


def _map_signature(item_fn: Callable[..., Any]) -> inspect.Signature:
    """``(items, *, <the function's other parameters>)``: what Prefect binds a call to."""
    name = getattr(item_fn, "__name__", repr(item_fn))
    try:
        signature = inspect.signature(item_fn)
    except (TypeError, ValueError):  # a builtin without a signature: items only
        return inspect.Signature(
            [inspect.Parameter(ITEMS_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        )
    parameters = list(signature.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not parameters or parameters[0].kind not in (*positional, inspect.Parameter.VAR_POSITIONAL):
        raise TypeError(
            f"{name}() must take the item as its first positional parameter, got {signature}"
        )
    rest: list[inspect.Parameter] = []
    for parameter in parameters[1:]:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue  # only the item is passed positionally
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(
                f"{name}() has the positional-only parameter {parameter.name!r} after the item; "
                f"the task passes every argument but the item by keyword"
            )
        if parameter.name == ITEMS_PARAMETER:
            raise TypeError(
                f"{name}() has a parameter named {ITEMS_PARAMETER!r}, the name of the task's "
                f"first parameter (the items to map); rename it"
            )
        kind = (
            parameter.kind
            if parameter.kind is inspect.Parameter.VAR_KEYWORD
            else inspect.Parameter.KEYWORD_ONLY
        )
        rest.append(parameter.replace(kind=kind))
    items = inspect.Parameter(ITEMS_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return inspect.Signature([items, *rest], return_annotation=list)


def _mapper(item_fn: Callable[..., Any], options: MapOptions) -> Callable[..., Any]:
    """The task's function: maps ``item_fn`` over ``items`` with ``kwargs`` fixed."""

    def run_map(items: Iterable[Any], /, **kwargs: Any) -> list[Any] | State[Any]:
        return _run_map(item_fn, items, kwargs, options)

    # Name, docstring and module from the item function; `__wrapped__` makes Prefect hash its
    # source (the cache policy), and `__signature__` makes Prefect bind (items, **fixed kwargs).
    functools.update_wrapper(run_map, item_fn)
    run_map.__signature__ = _map_signature(item_fn)  # type: ignore[attr-defined]
    return run_map


def _run_map(
    item_fn: Callable[..., Any],
    items: Iterable[Any],
    kwargs: dict[str, Any],
    options: MapOptions,
) -> list[Any] | State[Any]:
    context = TaskRunContext.get()
    task_name = context.task.name if context is not None else item_fn.__name__
    flow_run_id = context.task_run.flow_run_id if context is not None else None
    logger = run_logger()
    func = functools.partial(item_fn, **kwargs) if kwargs else item_fn
    variable = options.variable(task_name)
    previous = _history.load(variable, logger) if variable else None
    progress = ProgressReporter(task_name, logger)
    completed = False
    with forward_core_logs(logger), Watcher(flow_run_id, progress, logger) as watcher:
        try:
            iterator = imap(
                func,
                items,
                progress=progress.update,
                cancel=watcher.cancel,
                history=previous,
                **options.core_options(),
            )
            plan = iterator.plan
            logger.info(
                "amorsize plan for %s (%s):\n%s",
                task_name,
                _evidence(previous, plan.source, variable),
                plan_table(plan),
            )
            if options.progress is not False:
                progress.start(plan, always=options.progress is True)
            results: list[Any] = []
            for chunk in iterator.chunks():
                results.extend(chunk)
            completed = True
        except MapCancelledError as error:
            if watcher.reason is None:
                raise
            logger.warning("amorsize: %s: the map stopped and its workers were killed", error)
            return Cancelled(message=f"amorsize map of {task_name} cancelled: {watcher.reason}")
        finally:
            progress.finish(completed)
    record = iterator.record
    assert record is not None  # set once the iterator is exhausted
    plan = iterator.plan  # the plan that ran: a serial one may have been re-planned mid-map
    publish_plan(task_name, plan, record, logger, history_variable=variable)
    if variable:
        _history.store(variable, plan, record, logger)
    logger.info(
        "amorsize: %s mapped %d items in %.3f s: achieved speedup %.2fx (estimated %.2fx); "
        "artifact %r",
        task_name,
        record.n_items,
        record.wall_seconds,
        record.achieved_speedup,
        plan.estimated_speedup,
        artifact_key(task_name),
    )
    return results


def _evidence(previous: object, source: str, variable: str | None) -> str:
    if variable is None:
        return "history off"
    if previous is None:
        return f"no usable record in Variable {variable!r} yet"
    if source == "history":
        return f"started from the record in Variable {variable!r}; dry run skipped"
    return f"the record in Variable {variable!r} no longer fits; sampled again"
