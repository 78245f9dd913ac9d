"""The plan and the run record in the Prefect UI: a table artifact, a markdown summary, progress.

Every run of an amorsize task publishes one table artifact keyed ``amorsize-<task-name>``: a single
row holding the plan's contract keys (``backend``, ``n_jobs``, ``chunksize``,
``estimated_speedup``, ``reason``) and what the run really cost, described by a markdown summary
that the UI renders above the table. Long maps also report their progress through a progress
artifact keyed ``amorsize-<task-name>-progress``.

Nothing here may fail a stage whose results are computed: an API error is logged as a warning.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Coroutine
from typing import Any

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from ..data.plan import Plan, RunRecord
from ..report.tables import plan_markdown

__all__ = ["ProgressReporter", "artifact_key", "plan_row", "publish_plan", "slug"]

KEY_PREFIX = "amorsize-"
# Prefect accepts artifact keys and variable names of this many characters and more; a task name
# longer than this is cut, since a key is for finding the artifact, not for describing the task.
MAX_SLUG_LENGTH = 200
# Progress is worth a UI entry only for maps predicted to run at least this long: a shorter map is
# over before a person opens the run page, and every update is an API call.
PROGRESS_MIN_SECONDS = 5.0

_NOT_KEY_CHARACTERS = re.compile(r"[^a-z0-9]+")


def slug(name: str) -> str:
    """``name`` in the characters Prefect accepts in artifact keys: lowercase letters, digits, dashes.

    >>> slug("Featurize Images_v2")
    'featurize-images-v2'
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, got {type(name).__name__}")
    cleaned = _NOT_KEY_CHARACTERS.sub("-", name.lower()).strip("-")
    return cleaned[:MAX_SLUG_LENGTH].rstrip("-") or "task"


def artifact_key(task_name: str) -> str:
    """The key of the table artifact a task publishes: ``amorsize-<task-name>``."""
    return KEY_PREFIX + slug(task_name)


def progress_key(task_name: str) -> str:
    """The key of the progress artifact of a long map: ``amorsize-<task-name>-progress``."""
    return artifact_key(task_name) + "-progress"


def plan_row(plan: Plan, record: RunRecord | None = None) -> dict[str, Any]:
    """The facts of a plan (and of its run) as one row of plain JSON values, contract keys first."""
    row: dict[str, Any] = {
        "backend": plan.backend,
        "n_jobs": plan.n_jobs,
        "chunksize": plan.chunksize,
        "estimated_speedup": round(plan.estimated_speedup, 3),
        "reason": plan.reason,
        "start_method": plan.start_method,
        "source": plan.source,
        "function": plan.function,
        "n_items": plan.n_items,
        "predicted_seconds": round(plan.predicted_seconds, 4),
        "cpus": plan.limits.get("cpus"),
    }
    if record is not None:
        row.update(
            achieved_speedup=round(record.achieved_speedup, 3),
            wall_seconds=round(record.wall_seconds, 4),
            sample_seconds=round(record.sample_seconds, 4),
            startup_seconds=round(record.startup_seconds, 4),
            seconds_per_item=record.seconds_per_item,
            n_items=record.n_items,
            finished_at=record.finished_at,
        )
    return row


def summary_markdown(
    task_name: str, plan: Plan, record: RunRecord | None, history_variable: str | None
) -> str:
    """The markdown the UI shows above the table: the plan, what it achieved, where it is kept."""
    text = plan_markdown(plan, record, title=f"amorsize: {task_name}")
    notes = []
    if record is not None and plan.backend == "processes":
        notes.append(
            f"Worker start-up took {record.startup_seconds:.3f} s "
            f"({_start_method_note(plan.start_method)})."
        )
    if history_variable:
        notes.append(
            f"The next run of this task starts from this record (Prefect Variable "
            f"`{history_variable}`)."
        )
    return text + ("\n" + "\n\n".join(notes) + "\n" if notes else "")


def _start_method_note(start_method: str | None) -> str:
    if start_method == "fork":
        return "forked from a single-threaded caller"
    # Prefect runs tasks in a process with several threads (its engine, log and event workers),
    # where forking can deadlock; loky's fresh interpreters are the safe choice there.
    return "fresh loky interpreters: forking is unsafe in Prefect's multi-threaded engine"


def publish_plan(
    task_name: str,
    plan: Plan,
    record: RunRecord | None,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    history_variable: str | None = None,
) -> uuid.UUID | None:
    """Create the table artifact ``amorsize-<task-name>`` of this run; None when the API refused."""
    key = artifact_key(task_name)
    try:
        return _synchronous(
            create_table_artifact(
                table=[plan_row(plan, record)],
                key=key,
                description=summary_markdown(task_name, plan, record, history_variable),
            )
        )
    except Exception as error:  # the results are computed: a UI entry is not worth failing for
        logger.warning("amorsize: could not publish the artifact %r (%s)", key, error)
        return None


class ProgressReporter:
    """A progress artifact for a long map, fed by the map and pushed by a background thread.

    ``update`` is the core's progress callback: it only records the count, so that the map never
    waits on the API. ``push`` sends the latest count, at most once per call, from whichever thread
    calls it (the task's watcher); ``finish`` sends the final count and stops further pushes.
    """

    def __init__(self, task_name: str, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self.key = progress_key(task_name)
        self._logger = logger
        self._lock = threading.Lock()
        self._done = 0
        self._total: int | None = None
        self._pushed: float | None = None
        self._artifact_id: uuid.UUID | None = None
        self._closed = False

    def update(self, done: int, total: int | None) -> None:
        """Record progress (the core calls this after every chunk)."""
        self._done, self._total = done, total

    def start(self, plan: Plan, always: bool) -> bool:
        """Create the artifact when the map is long (or ``always``); True when it was created."""
        if not always and plan.predicted_seconds < PROGRESS_MIN_SECONDS:
            return False
        try:
            self._artifact_id = _synchronous(
                create_progress_artifact(
                    progress=self._percent(),
                    key=self.key,
                    description=f"amorsize: {plan.summary()}",
                )
            )
        except Exception as error:
            self._logger.warning("amorsize: could not create the artifact %r (%s)", self.key, error)
            return False
        return True

    def push(self) -> None:
        """Send the latest progress, unless it is unchanged or the map has finished."""
        with self._lock:
            if self._closed or self._artifact_id is None:
                return
            self._send(self._percent())

    def finish(self, completed: bool) -> None:
        """Send the final progress (100% when ``completed``) and stop further pushes."""
        with self._lock:
            if self._closed or self._artifact_id is None:
                self._closed = True
                return
            self._closed = True
            self._send(100.0 if completed else self._percent())

    def _percent(self) -> float:
        if not self._total:
            return 0.0
        return min(100.0, 100.0 * self._done / self._total)

    def _send(self, percent: float) -> None:
        if self._pushed == percent or self._artifact_id is None:
            return
        try:
            update_progress_artifact(artifact_id=self._artifact_id, progress=percent)
            self._pushed = percent
        except Exception as error:  # progress is a courtesy; the map goes on
            self._logger.debug("amorsize: could not update the artifact %r (%s)", self.key, error)


def _synchronous(created: uuid.UUID | Coroutine[Any, Any, uuid.UUID]) -> uuid.UUID:
    """Prefect's artifact functions return a coroutine only when called from async code; the
    map's task and its watcher thread call them synchronously, so this is the artifact's id."""
    assert isinstance(created, uuid.UUID), "artifact functions must be called synchronously here"
    return created
