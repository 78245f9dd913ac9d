"""``@task.amorsize``: the TaskFlow form of :class:`AmorsizeOperator`.

The decorated function handles one item; the task is called with the items as its first argument
and fixed keyword arguments after it, and returns the list of results::

    @task.amorsize(max_workers=8, retries=2)
    def featurize(image, scale=1.0):
        ...

    features = featurize(images, scale=2.0)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from .operators import AmorsizeOperator

__all__ = ["amorsize_task"]


class _AmorsizeDecoratedOperator(DecoratedOperator, AmorsizeOperator):  # type: ignore[misc]
    """Binds the call's first argument to ``items`` and the rest to ``op_kwargs``."""

    custom_operator_name = "@task.amorsize"
    template_fields: Sequence[str] = AmorsizeOperator.template_fields
    template_fields_renderers = AmorsizeOperator.template_fields_renderers

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        op_args = list(op_args or ())
        if len(op_args) != 1:
            raise TypeError(
                f"@task.amorsize: call {getattr(python_callable, '__name__', 'the task')} with the "
                f"items as its one positional argument and fixed keyword arguments after it "
                f"(featurize(images, scale=2)); got {len(op_args)} positional arguments"
            )
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            kwargs_to_upstream={
                "python_callable": python_callable,
                "items": op_args[0],
                "op_kwargs": dict(op_kwargs or {}),
            },
            **kwargs,
        )


def amorsize_task(
    python_callable: Callable[..., Any] | None = None, **kwargs: Any
) -> TaskDecorator:
    """Wrap a function of one item into a task that maps it over a list.

    Accepts every ``BaseOperator`` argument (retries, pool, execution_timeout, ...) and every
    planner argument of :class:`AmorsizeOperator` (max_workers, memory_limit, backend, n_jobs,
    chunksize, sample_size, reducer, max_xcom_bytes, learn_from_previous_runs).
    """
    if kwargs.pop("multiple_outputs", False):
        raise TypeError(
            "@task.amorsize returns one list of results: multiple_outputs is not supported"
        )
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=False,
        decorated_operator_class=_AmorsizeDecoratedOperator,
        **kwargs,
    )
