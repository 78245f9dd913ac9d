"""Results too large for XCom go to a file or object storage; the task returns the path."""

from __future__ import annotations

import json
import os
from typing import Any

from airflow.sdk import ObjectStoragePath

__all__ = ["deliver", "read_results"]


# JSON takes at most this many times the bytes of the pickled values the run measured (a float
# pickles to 9 bytes and prints in up to 24): below the limit by this factor, no need to check.
_JSON_PER_PICKLED_BYTE = 3


def deliver(value: Any, operator: Any, context: Any, pickled_bytes: float | None = None) -> Any:
    """Return ``value`` for XCom when its JSON fits ``max_xcom_bytes``, else write it and return
    the path (a string: XCom stores it, and ``ObjectStoragePath(path)`` reads it back).

    ``pickled_bytes``, the results' measured size, spares serializing small results twice.
    """
    if (
        pickled_bytes is not None
        and pickled_bytes * _JSON_PER_PICKLED_BYTE < operator.max_xcom_bytes
    ):
        return value
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        # Not plain JSON: Airflow's serializer may still store it (numpy, datetimes, ...), but its
        # size is unknown, so only small results pass.
        text = None
    if text is not None and len(text) <= operator.max_xcom_bytes:
        return value
    if text is None:
        raise TypeError(
            "The results are not plain JSON, so their size cannot be checked against "
            f"max_xcom_bytes={operator.max_xcom_bytes}; return JSON-friendly values "
            "(lists, dicts, numbers, strings) or give the operator a `reducer`"
        )
    path = _target(operator, context)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    operator.log.warning(
        "amorsize: the results (%.1f MB of JSON) exceed max_xcom_bytes=%d; written to %s, "
        "and that path is the task's return value",
        len(text) / 1e6,
        operator.max_xcom_bytes,
        path,
    )
    return str(path)


def read_results(value: Any) -> Any:
    """What a downstream task gets back: the results themselves, whether the stage returned them
    through XCom or wrote them to storage and returned the path."""
    if isinstance(value, str) and "://" in value:
        return json.loads(ObjectStoragePath(value).read_text())
    return value


def _target(operator: Any, context: Any) -> ObjectStoragePath:
    ti = context["ti"]
    base = operator.results_path or _default_base()
    name = ti.task_id if ti.map_index in (None, -1) else f"{ti.task_id}-{ti.map_index}"
    run_id = str(context["run_id"]).replace(":", "_").replace("+", "_")
    return ObjectStoragePath(str(base)) / ti.dag_id / run_id / f"{name}.json"


def _default_base() -> str:
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return "file://" + os.path.join(os.path.abspath(home), "amorsize-results")
