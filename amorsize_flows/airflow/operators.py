"""``AmorsizeOperator``: one task that maps a callable over items with the right parallel plan."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator

from .. import MapCancelledError, run
from ..data.checks import check_positive_int
from ..data.options import check_options
from ..measure.budget import cpu_budget
from ..report.tables import plan_table
from ._records import RUN_XCOM_KEY, previous_record
from ._results import deliver

__all__ = ["PLAN_XCOM_KEY", "RUN_XCOM_KEY", "AmorsizeOperator"]

PLAN_XCOM_KEY = "amorsize_plan"

# XCom lives in the metadata database: past this many bytes of JSON, results go to a file or
# object storage instead and the task returns the path (Airflow's own docs call XCom "small").
DEFAULT_MAX_XCOM_BYTES = 1 << 20
# A long map reports progress in the task log at most this often.
PROGRESS_LOG_SECONDS = 30.0


class AmorsizeOperator(BaseOperator):
    """Map ``python_callable`` over ``items`` with a plan measured on this worker.

    The optimization step runs on the worker that executes the task, inside its CPU and memory
    limits (container quotas included): a short dry run, or the previous successful run's record
    of this task when the function and the data still fit. The plan goes to XCom under
    ``amorsize_plan`` and what the run cost under ``amorsize_run`` (plain JSON dicts), and both
    are logged as a table. The task returns the list of results in input order, or, when they are
    too large for XCom, the path they were written to.

    Args:
        python_callable: a function of one item.
        items: the items: a list (templated), an upstream task's ``XComArg``, or a callable
            without arguments that loads them on the worker.
        op_kwargs: keyword arguments passed unchanged to every call (templated).
        max_workers: at most this many workers, whatever the CPUs.
        memory_limit: plan within this many bytes (an int, or a string like ``"4G"``).
        backend: fix the backend (``"serial"``, ``"threads"`` or ``"processes"``).
        n_jobs, chunksize: fix the workers or the chunk size; the planner chooses the rest.
        sample_size: steady-state calls in the dry run; adaptive when None.
        learn_from_previous_runs: start from the previous successful run's record of this task.
        reducer: a function applied to the list of results; its value is returned instead.
        max_xcom_bytes: results whose JSON is larger are logged with a warning where no
            object-storage XCom backend keeps them (common-io's ``XComObjectStorageBackend``);
            they are returned either way.
        **kwargs: every ``BaseOperator`` argument (retries, pool, execution_timeout, ...).
    """

    template_fields: Sequence[str] = ("items", "op_kwargs")
    template_fields_renderers: ClassVar[dict[str, str]] = {"items": "py", "op_kwargs": "py"}
    ui_color = "#e8f4e8"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        items: Iterable[Any] | Callable[[], Iterable[Any]] | Any,
        op_kwargs: Mapping[str, Any] | None = None,
        max_workers: int | None = None,
        memory_limit: int | str | None = None,
        backend: str | None = None,
        n_jobs: int | None = None,
        chunksize: int | None = None,
        sample_size: int | None = None,
        learn_from_previous_runs: bool = True,
        reducer: Callable[[list[Any]], Any] | None = None,
        max_xcom_bytes: int = DEFAULT_MAX_XCOM_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(python_callable):
            raise TypeError(f"`python_callable` must be callable, got {python_callable!r}")
        if isinstance(items, (str, bytes)):
            raise TypeError(
                "`items` must be a list, an XComArg or a callable, got a string; for a templated "
                "list set render_template_as_native_obj=True on the DAG"
            )
        if reducer is not None and not callable(reducer):
            raise TypeError(f"`reducer` must be callable or None, got {reducer!r}")
        check_positive_int("max_xcom_bytes", max_xcom_bytes)
        self.python_callable = python_callable
        # Airflow calls callables found in templated fields with the context; a loader of items
        # takes no arguments, so it is kept out of them and called in execute().
        self.items_loader = items if callable(items) else None
        self.items = None if callable(items) else items
        self.op_kwargs: Mapping[str, Any] = dict(op_kwargs or {})
        self.planner_options: dict[str, Any] = {
            name: value
            for name, value in {
                "max_workers": max_workers,
                "memory_limit": memory_limit,
                "backend": backend,
                "n_jobs": n_jobs,
                "chunksize": chunksize,
                "sample_size": sample_size,
            }.items()
            if value is not None
        }
        check_options(self.planner_options)  # a bad option fails the DAG file's import, visibly
        self.learn_from_previous_runs = learn_from_previous_runs
        self.reducer = reducer
        self.max_xcom_bytes = max_xcom_bytes
        self._cancel: threading.Event | None = None

    def execute(self, context: Any) -> Any:
        """Plan on this worker, push the plan, run the map, push what it cost."""
        ti = context["ti"]
        items = self._resolve_items()
        func = (
            functools.partial(self.python_callable, **self.op_kwargs)
            if self.op_kwargs
            else self.python_callable
        )
        history = (
            previous_record(ti, self.task_id, self.log) if self.learn_from_previous_runs else None
        )
        self._cancel = threading.Event()
        try:
            with self._pool_budget():
                outcome = run(
                    func,
                    items,
                    history=history,
                    cancel=self._cancel,
                    progress=_ProgressLog(self.log),
                    **self.planner_options,
                )
        except MapCancelledError:
            self.log.error("amorsize: the map was killed; its workers are stopped")
            raise
        except Exception as error:
            notes = [
                note for note in getattr(error, "__notes__", ()) if note.startswith("amorsize:")
            ]
            self.log.error("amorsize: the map failed: %r %s", error, " ".join(notes))
            raise
        ti.xcom_push(key=PLAN_XCOM_KEY, value=outcome.plan.to_dict())
        ti.xcom_push(key=RUN_XCOM_KEY, value=outcome.record.to_dict())
        self.log.info("amorsize plan and run:\n%s", plan_table(outcome.plan, outcome.record))
        if self.reducer is not None:
            return deliver(self.reducer(outcome.results), self)
        measured = outcome.record.profile.get("bytes_out_per_item")
        pickled = measured * len(outcome.results) if isinstance(measured, (int, float)) else None
        return deliver(outcome.results, self, pickled_bytes=pickled)

    def on_kill(self) -> None:
        """SIGTERM, execution_timeout or a user marking the task: stop the map and its workers.

        Airflow lets ``execute`` carry on after calling this, so the map checks the event and
        raises, and the task fails instead of ending as a success.
        """
        if self._cancel is not None:
            self._cancel.set()

    # --- helpers --------------------------------------------------------------------------------

    def _pool_budget(self) -> contextlib.AbstractContextManager[None]:
        """Plan within the pool slots this task declares it takes, where it takes more than one.

        One slot, the default, says nothing of CPUs: pools also bound connections and API calls.
        (docs/decisions.md#what-a-deployment-declares)
        """
        slots = self.pool_slots
        if slots <= 1:
            return contextlib.nullcontext()
        return cpu_budget(slots, f"Airflow pool_slots={slots} of pool {self.pool!r}")

    def _resolve_items(self) -> Iterable[Any]:
        items = self.items_loader() if self.items_loader is not None else self.items
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(
                f"`items` must resolve to a list or another iterable, got {type(items).__name__}; "
                f"for a templated list set render_template_as_native_obj=True on the DAG"
            )
        return items


class _ProgressLog:
    """Progress of a long map, in the task log, at most every PROGRESS_LOG_SECONDS."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._last = time.monotonic()

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_LOG_SECONDS and done != total:
            return
        self._last = now
        if total:
            self._log.info(
                "amorsize: %d of %d items done (%.0f%%)", done, total, 100 * done / total
            )
        else:
            self._log.info("amorsize: %d items done", done)
