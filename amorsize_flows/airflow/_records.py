"""The previous successful run's record of a task, read back from XCom as the next run's evidence."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..data.errors import InvalidPlanError
from ..data.plan import RunRecord

__all__ = ["RUN_XCOM_KEY", "previous_record"]

RUN_XCOM_KEY = "amorsize_run"


def previous_record(ti: Any, task_id: str, log: logging.Logger) -> RunRecord | None:
    """This task's record from its latest earlier successful run, if it is readable."""
    started = time.perf_counter()
    try:
        stored = ti.xcom_pull(
            task_ids=task_id,
            key=RUN_XCOM_KEY,
            include_prior_dates=True,
            map_indexes=ti.map_index,
        )
    except Exception as error:  # an unreachable store must not fail the stage
        log.warning("amorsize: could not read the previous run's record (%s); sampling", error)
        return None
    if not stored:
        log.info("amorsize: no previous run of this task recorded; sampling")
        return None
    try:
        record = RunRecord.from_dict(stored)
    except InvalidPlanError as error:
        log.warning("amorsize: ignoring the previous run's record: %s", error)
        return None
    log.info(
        "amorsize: read the previous run's record (%d items, %.2fx achieved) in %.1f ms",
        record.n_items,
        record.achieved_speedup,
        (time.perf_counter() - started) * 1e3,
    )
    return record
