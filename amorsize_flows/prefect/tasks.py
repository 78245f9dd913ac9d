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

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, overload

from prefect import Task

from ..data.options import PLAN_SETTINGS, PlanSettings, check_options
from ..measure.identity import function_identity, short_name
from . import _history
from ._map import check_item_fn, mapper

__all__ = ["AmorsizeTask", "amorsize_task"]

log = logging.getLogger(__name__)

# Characters of the function's digest in the task key: as many as Prefect's own task keys carry.
TASK_KEY_DIGEST_CHARS = 10


@dataclass(frozen=True)
class MapOptions(PlanSettings):
    """How an amorsize task plans its map (the core's options), and what it keeps between runs.

    Attributes:
        max_workers, memory_limit, sample_size, backend, n_jobs, chunksize: passed to
            :func:`amorsize_flows.run`; see there.
        history: True keeps the last good run in a Prefect Variable named by the flow, the
            deployment (where there is one) and the task (``amorsize-<flow>-<task>``) and
            starts the next run from it; a string names another Variable; False keeps nothing.
        progress: True always publishes a progress artifact, False never, None (the default) only
            for maps predicted to take at least a few seconds.
    """

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

    def variable(self, task_name: str, flow_name: str = "", deployment: str = "") -> str | None:
        """The Variable that keeps the last good run of the task, or None when not kept."""
        if self.history is False:
            return None
        if self.history is True:
            return _history.variable_name(task_name, flow_name, deployment)
        return self.history


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
        check_item_fn(item_fn)
        options = map_options if map_options is not None else MapOptions()
        if not isinstance(options, MapOptions):
            raise TypeError(f"`map_options` must be a MapOptions, got {type(options).__name__}")
        super().__init__(fn=mapper(item_fn, options), **task_options)
        self._bind(item_fn, options)

    def with_options(self, **options: Any) -> AmorsizeTask:  # type: ignore[override]
        """A copy with some map options (:class:`MapOptions`' fields) and some Prefect task
        options changed.

        Map options left out keep their value; the rest are :meth:`prefect.Task.with_options`'s,
        handled by Prefect itself.
        """
        mapped = {name: options.pop(name) for name in _OPTION_NAMES & set(options)}
        task_options = options
        changed = replace(self.map_options, **mapped)
        task = super().with_options(**task_options)
        # Prefect's with_options builds a plain Task from every option it knows (including those
        # of later releases); making that object ours keeps Prefect in charge of its options.
        task.__class__ = type(self)
        assert isinstance(task, AmorsizeTask)
        task._bind(self.item_fn, changed)
        return task

    def _bind(self, item_fn: Callable[..., Any], options: MapOptions) -> None:
        self.item_fn = item_fn
        self.map_options = options
        self.fn = mapper(item_fn, options)
        # Prefect keys a task by its function's code; ours is the same wrapper for every task.
        self.task_key = (
            f"{short_name(item_fn)}-{function_identity(item_fn)[1][:TASK_KEY_DIGEST_CHARS]}"
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
    item_fn: None = None, /, **options: Any
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
        **{name: value for name, value in locals().items() if name in _OPTION_NAMES}
    )

    def decorate(fn: Callable[..., Any]) -> AmorsizeTask:
        return AmorsizeTask(fn, map_options=options, **task_options)

    return decorate(item_fn) if item_fn is not None else decorate
