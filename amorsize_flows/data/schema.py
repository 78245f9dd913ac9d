"""JSON schemas of everything amorsize-flows stores: plans and run records.

Stores (files, Airflow XCom, Prefect variables) can hold anything, including entries written by an
older version or by someone hostile. Every entry is validated here before a field is trusted, and
nothing is ever unpickled from a store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .checks import BACKENDS
from .errors import InvalidPlanError

__all__ = ["PLAN_SCHEMA", "RECORD_SCHEMA", "SCHEMA_VERSION", "validate"]

SCHEMA_VERSION = 1

# Bounds keep a hostile entry from steering the runner into absurd work: no machine we plan for
# has more than 4096 CPUs, and no sentence we write is longer than a few hundred characters.
_MAX_WORKERS = 4096
_MAX_TEXT = 2000

_seconds = {"type": "number", "minimum": 0}
_ratio = {"type": "number", "minimum": 0}
_workers = {"type": "integer", "minimum": 1, "maximum": _MAX_WORKERS}
_chunksize = {"type": "integer", "minimum": 1}
_source = {"enum": ["sampled", "history", "fixed", "stored"]}
_count = {"type": "integer", "minimum": 0}
_text = {"type": "string", "maxLength": _MAX_TEXT}
_backend = {"enum": list(BACKENDS)}
_start_method = {"enum": ["fork", "loky", None]}
_numbers = {
    "type": "object",
    "maxProperties": 64,
    "additionalProperties": {"type": ["number", "integer", "string", "boolean", "null"]},
}

CANDIDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["backend", "n_jobs", "chunksize", "predicted_seconds"],
    "additionalProperties": False,
    "properties": {
        "backend": _backend,
        "n_jobs": _workers,
        "chunksize": _chunksize,
        "start_method": _start_method,
        "predicted_seconds": _seconds,
    },
}

PLAN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "amorsize-flows plan",
    "type": "object",
    "required": ["schema_version", "backend", "n_jobs", "chunksize", "estimated_speedup", "reason"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "backend": _backend,
        "n_jobs": _workers,
        "chunksize": _chunksize,
        "estimated_speedup": _ratio,
        "reason": _text,
        "start_method": _start_method,
        "predicted_seconds": _seconds,
        "serial_seconds": _seconds,
        "n_items": {"type": ["integer", "null"], "minimum": 0},
        "function": _text,
        "function_digest": _text,
        "source": _source,
        "limits": _numbers,
        "profile": _numbers,
        "candidates": {"type": "array", "maxItems": 10000, "items": CANDIDATE_SCHEMA},
        "unmodelled_process_seconds": _seconds,
        "created_at": _text,
    },
}

RECORD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "amorsize-flows run record",
    "type": "object",
    "required": [
        "schema_version",
        "function",
        "function_digest",
        "n_items",
        "backend",
        "n_jobs",
        "chunksize",
        "wall_seconds",
        "seconds_per_item",
        "achieved_speedup",
    ],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "function": _text,
        "function_digest": _text,
        "n_items": _count,
        "backend": _backend,
        "n_jobs": _workers,
        "chunksize": _chunksize,
        "start_method": _start_method,
        "source": _source,
        "wall_seconds": _seconds,
        "sample_seconds": _seconds,
        "map_seconds": _seconds,
        "startup_seconds": _seconds,
        "sampled_items": _count,
        "seconds_per_item": _seconds,
        "cpu_seconds_per_item": _seconds,
        "serial_seconds_estimate": _seconds,
        "achieved_speedup": _ratio,
        "estimated_speedup": _ratio,
        "peak_memory_bytes": _count,
        "unmodelled_process_seconds": _seconds,
        "limits": _numbers,
        "profile": _numbers,
        "finished_at": _text,
    },
}


def validate(data: object, schema: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Check ``data`` against ``schema``; raise :class:`InvalidPlanError` saying what is wrong."""
    if not isinstance(data, dict):
        raise InvalidPlanError(f"a stored {what} must be a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidPlanError(
            f"a stored {what} has schema_version {version!r}; this version of amorsize-flows "
            f"reads {SCHEMA_VERSION}. Delete the entry, or let the next run sample again."
        )
    import jsonschema  # only where a stored entry is read (docs/decisions.md#import-cost)

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(data)
    )
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise InvalidPlanError(f"a stored {what} is malformed at {where}: {error.message}")
    return data
