"""The function an amorsize task runs: the signature Prefect binds a call to, and the map inside
the task run (plan, artifacts, progress, cancellation, the record kept for the next run)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prefect import Task
from prefect.context import FlowRunContext, TaskRunContext
from prefect.states import Cancelled, State

from ..api import MapIterator, imap
from ..data.errors import MapCancelledError
from ..measure.identity import innermost, short_name
from ..report.tables import plan_table
from . import _history
from ._logs import forward_core_logs, run_logger
from ._watcher import Watcher
from .artifacts import ProgressReporter, artifact_key, publish_plan

if TYPE_CHECKING:
    from .tasks import MapOptions

__all__ = ["ITEMS_PARAMETER", "check_item_fn", "map_signature", "mapper"]

# The name of the task's first parameter, the items to map; the function's other parameters follow.
ITEMS_PARAMETER = "items"


def check_item_fn(item_fn: object) -> None:
    if isinstance(item_fn, Task):
        raise TypeError(
            f"@amorsize_task wraps a plain function of one item, got the Prefect task "
            f"{item_fn.name!r}; put @amorsize_task in place of @task"
        )
    if not callable(item_fn):
        raise TypeError(f"@amorsize_task needs a function of one item, got {item_fn!r}")
    if inspect.iscoroutinefunction(item_fn) or inspect.isasyncgenfunction(item_fn):
        raise TypeError(
            f"@amorsize_task maps {short_name(item_fn)!r} in threads or "
            f"processes, which call it synchronously; an async function cannot be mapped that way"
        )
    map_signature(item_fn)  # raises on a function that cannot take one item


def map_signature(item_fn: Callable[..., Any]) -> inspect.Signature:
    """``(items, *, <the function's other parameters>)``: what Prefect binds a call to."""
    name = short_name(item_fn)
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


def mapper(item_fn: Callable[..., Any], options: MapOptions) -> Callable[..., Any]:
    """The task's function: maps ``item_fn`` over ``items`` with ``kwargs`` fixed."""

    def run_map(items: Iterable[Any], /, **kwargs: Any) -> list[Any] | State[Any]:
        return _run_map(item_fn, items, kwargs, options)

    # Name, docstring and module from the item function (through any partial); `__wrapped__`
    # makes Prefect hash its source (the cache policy), and `__signature__` makes Prefect bind
    # (items, **fixed kwargs).
    functools.update_wrapper(run_map, innermost(item_fn))
    run_map.__signature__ = map_signature(item_fn)  # type: ignore[attr-defined]
    return run_map


def _run_map(
    item_fn: Callable[..., Any],
    items: Iterable[Any],
    kwargs: dict[str, Any],
    options: MapOptions,
) -> list[Any] | State[Any]:
    context = TaskRunContext.get()
    task_name = context.task.name if context is not None else short_name(item_fn)
    flow_run_id = context.task_run.flow_run_id if context is not None else None
    logger = run_logger()
    func = functools.partial(item_fn, **kwargs) if kwargs else item_fn
    variable = options.variable(task_name, *_flow_and_deployment())
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
    _publish(task_name, iterator, variable, logger)
    return results


def _publish(task_name: str, iterator: MapIterator, variable: str | None, logger: Any) -> None:
    """The plan that ran and what it cost: an artifact, the Variable for the next run, a line."""
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


def _flow_and_deployment() -> tuple[str, str]:
    """The running flow's name and its run's deployment id, where they are known."""
    context = FlowRunContext.get()
    if context is None or context.flow is None:
        return "", ""
    deployment = getattr(context.flow_run, "deployment_id", None) if context.flow_run else None
    return context.flow.name, str(deployment or "")


def _evidence(previous: object, source: str, variable: str | None) -> str:
    if variable is None:
        return "history off"
    if previous is None:
        return f"no usable record in Variable {variable!r} yet"
    if source == "history":
        return f"started from the record in Variable {variable!r}; dry run skipped"
    return f"the record in Variable {variable!r} no longer fits; sampled again"
