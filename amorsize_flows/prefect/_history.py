"""The last good run of each amorsize task, kept in a Prefect Variable for the next scheduled run.

The Variable ``amorsize-<flow>-<task>`` (``amorsize-<flow>-<deployment>-<task>`` in a deployment's
runs) holds plain JSON: the run record (it carries the function's
costs corrected by the run, which is what the next run's plan starts from) and a short summary of
the plan for a person reading it in the UI. Prefect caps a Variable's value at 5,000 characters:
what the next run does not read is trimmed, and an entry that would still not fit is not stored.
An entry that is corrupt, of another format, or larger than the cap is ignored with a warning:
nothing from a store is trusted before it is validated, and nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from prefect.types import MAX_VARIABLE_NAME_LENGTH, MAX_VARIABLE_VALUE_LENGTH
from prefect.variables import Variable

from ..data.errors import InvalidPlanError
from ..data.plan import Plan, RunRecord
from .artifacts import KEY_PREFIX, slug

__all__ = [
    "ENTRY_FORMAT",
    "check_variable_name",
    "encode",
    "load",
    "parse",
    "store",
    "variable_name",
]

# The layout of the Variable's value; an entry of another format is ignored and replaced.
ENTRY_FORMAT = 1
# Characters of a digest that stands for the end of a name too long for a Variable.
DIGEST_CHARS = 12
# Tagged so that a person can list every amorsize entry in the UI's Variables page.
TAGS = ["amorsize"]
# The plan fields worth reading in the UI; the next run re-plans from the record's profile.
_PLAN_SUMMARY = ("backend", "n_jobs", "chunksize", "start_method", "estimated_speedup", "reason")

Logger = logging.Logger | logging.LoggerAdapter[Any]


def variable_name(task_name: str, flow_name: str = "", deployment: str = "") -> str:
    """The Variable that keeps a task's last good run, named by its flow, the flow run's
    deployment (where there is one) and the task: two flows, or two deployments of one, with a
    task of the same name keep a record each. Long names keep their start and a digest, within
    Prefect's limit on a Variable's name."""
    parts = [slug(part) for part in (flow_name, deployment, task_name) if part]
    name = KEY_PREFIX + "-".join(parts)
    if len(name) <= MAX_VARIABLE_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:DIGEST_CHARS]
    return f"{name[: MAX_VARIABLE_NAME_LENGTH - DIGEST_CHARS - 1]}-{digest}"


def check_variable_name(name: object) -> str:
    """Return ``name`` if Prefect accepts it as a Variable name, else raise ValueError."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_VARIABLE_NAME_LENGTH
        or any(not (c.islower() or c.isdigit() or c in "-_") for c in name)
        or not name.isascii()
    ):
        raise ValueError(
            f"`history` must be True, False, or a Prefect Variable name (lowercase letters, digits, "
            f"dashes and underscores, at most {MAX_VARIABLE_NAME_LENGTH} characters), got {name!r}"
        )
    return name


def encode(plan: Plan, record: RunRecord) -> dict[str, Any] | None:
    """The Variable's value for this run, trimmed to fit Prefect's cap; None if it cannot fit."""
    trimmed = record.to_dict()
    # The next run detects its own limits; the record's copy only costs characters.
    trimmed["limits"] = {}
    plan_data = plan.to_dict()
    entry: dict[str, Any] = {
        "format": ENTRY_FORMAT,
        "plan": {name: plan_data[name] for name in _PLAN_SUMMARY},
        "record": trimmed,
    }
    if _size(entry) <= MAX_VARIABLE_VALUE_LENGTH:
        return entry
    # The plan summary is for people; the record is what the next run needs.
    del entry["plan"]
    return entry if _size(entry) <= MAX_VARIABLE_VALUE_LENGTH else None


def parse(value: object) -> RunRecord:
    """The run record in a Variable's value.

    Raises:
        InvalidPlanError: when the value is not an entry of this format, is larger than Prefect's
            cap, or holds a record that does not validate.
    """
    if not isinstance(value, Mapping):
        raise InvalidPlanError(f"it holds a {type(value).__name__}, not an amorsize entry")
    size = _size(value)
    if size > MAX_VARIABLE_VALUE_LENGTH:
        raise InvalidPlanError(
            f"it holds {size} characters, more than Prefect's {MAX_VARIABLE_VALUE_LENGTH}"
        )
    if value.get("format") != ENTRY_FORMAT:
        raise InvalidPlanError(
            f"its format is {value.get('format')!r}; this version reads {ENTRY_FORMAT}"
        )
    return RunRecord.from_dict(value.get("record"))  # type: ignore[arg-type]


def load(name: str, logger: Logger) -> RunRecord | None:
    """The record kept in Variable ``name``, or None (absent, unreadable, or invalid: warned)."""
    try:
        value = Variable.get(name, default=None)
    except Exception as error:  # an API error costs a dry run, never the stage
        logger.warning("amorsize: could not read Prefect Variable %r (%s); sampling", name, error)
        return None
    if value is None:
        return None
    try:
        return parse(value)
    except (InvalidPlanError, TypeError, ValueError) as error:
        logger.warning(
            "amorsize: ignoring Prefect Variable %r: %s. This run samples again and replaces it.",
            name,
            error,
        )
        return None


def store(name: str, plan: Plan, record: RunRecord, logger: Logger) -> bool:
    """Keep this run's record in Variable ``name`` for the next run; False (warned) if not kept."""
    entry = encode(plan, record)
    if entry is None:
        logger.warning(
            "amorsize: the run record of %s does not fit in a Prefect Variable (%d characters at "
            "most); the next run samples again",
            record.function,
            MAX_VARIABLE_VALUE_LENGTH,
        )
        return False
    try:
        Variable.set(name, entry, tags=TAGS, overwrite=True)
    except Exception as error:
        logger.warning("amorsize: could not store Prefect Variable %r (%s)", name, error)
        return False
    return True


def _size(value: object) -> int:
    # Prefect measures the compact JSON encoding of the value, in bytes (UTF-8).
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
