"""The stage's results go through XCom as they are, whatever their size: one return type.

Large values are the XCom backend's business: Airflow's common-io ``XComObjectStorageBackend``
keeps those over its threshold in object storage and a reference in the database, transparently
to every downstream task. Without such a backend, a result over ``max_xcom_bytes`` still goes
through, with a warning that says how to configure one.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["OBJECT_STORAGE_BACKEND", "deliver", "object_storage_configured"]

OBJECT_STORAGE_BACKEND = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
# JSON takes at most this many times the bytes of the pickled values the run measured (a float
# pickles to 9 bytes and prints in up to 24): below the limit by this factor, no need to check.
_JSON_PER_PICKLED_BYTE = 3


def deliver(value: Any, operator: Any, pickled_bytes: float | None = None) -> Any:
    """``value``, for XCom; warn where it is over ``operator.max_xcom_bytes`` of JSON and no
    object-storage XCom backend is configured. ``pickled_bytes``, the results' measured size,
    spares serializing small results only to measure them."""
    if (
        pickled_bytes is not None
        and pickled_bytes * _JSON_PER_PICKLED_BYTE < operator.max_xcom_bytes
    ):
        return value
    if object_storage_configured():
        return value
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError):  # Airflow's serializer may still store it (numpy, ...)
        return value
    if size > operator.max_xcom_bytes:
        operator.log.warning(
            "amorsize: the results are %.1f MB of JSON (over max_xcom_bytes=%d) and go to the "
            "metadata database. Keep large XComs in object storage: set [core] xcom_backend = "
            "%s and [common.io] xcom_objectstorage_path and xcom_objectstorage_threshold; or "
            "give the operator a `reducer`",
            size / 1e6,
            operator.max_xcom_bytes,
            OBJECT_STORAGE_BACKEND,
        )
    return value


def object_storage_configured() -> bool:
    """Whether this deployment keeps large XComs in object storage (common-io's backend, or a
    subclass named so)."""
    from airflow.configuration import conf

    backend = conf.get("core", "xcom_backend", fallback="") or ""
    threshold = conf.getint("common.io", "xcom_objectstorage_threshold", fallback=-1)
    return "ObjectStorage" in backend and threshold >= 0
