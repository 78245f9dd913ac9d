"""The planner's options, checked where they are given: a bad one fails with what was expected.

The integrations check them when a task is declared (``check_options``), so that a DAG or flow
with a bad option fails when it is loaded, not hours later when its task runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .checks import check_backend, check_positive_int, parse_memory
from .plan import RunRecord

__all__ = [
    "PLAN_SETTINGS",
    "Options",
    "PlanSettings",
    "check_callable",
    "check_items",
    "check_options",
    "items_or_data",
]

NOT_GIVEN: Any = object()  # an argument left out, where None could be meant


@dataclass(frozen=True)
class PlanSettings:
    """The settings that shape a plan; None leaves a setting to the model."""

    max_workers: int | None = None
    memory_limit: int | str | None = None
    sample_size: int | None = None
    backend: str | None = None
    n_jobs: int | None = None
    chunksize: int | None = None


@dataclass(frozen=True)
class Options(PlanSettings):
    """The caller's settings for one map, and a previous run's record to start from."""

    history: RunRecord | None = None

    @classmethod
    def build(cls, given: Mapping[str, Any]) -> Options:
        """The options among ``given`` (a call's keyword arguments), each checked.

        Raises:
            TypeError, ValueError: naming the option, what was expected and what was got.
        """
        names = set(cls.__dataclass_fields__)
        values = {key: value for key, value in given.items() if key in names}
        unknown = set(given) - names - {"func", "items"}
        if unknown:
            raise TypeError(
                f"unexpected option(s) {', '.join(sorted(unknown))}; expected any of "
                f"{', '.join(sorted(names))}"
            )
        for name in ("max_workers", "sample_size", "n_jobs", "chunksize"):
            check_positive_int(name, values.get(name), optional=True)
        if values.get("memory_limit") is not None:
            parse_memory(values["memory_limit"])  # "4G" is checked now, not when a map starts
        check_backend(values.get("backend"), optional=True)
        history = values.get("history")
        # None first: asking the Mapping ABC about a type it has not seen is slow in a fresh process.
        if history is not None and not isinstance(history, RunRecord):
            if not isinstance(history, Mapping):
                raise TypeError(
                    f"`history` must be a RunRecord, its dict, or None, got "
                    f"{type(history).__name__}"
                )
            values["history"] = RunRecord.from_dict(history)
        return cls(**values)


# The options that shape a plan; ``history`` is evidence of a previous run, which the
# integrations keep and hand over themselves.
PLAN_SETTINGS = tuple(field.name for field in fields(PlanSettings))


def check_options(options: Mapping[str, Any]) -> None:
    """Check the planner's options (``max_workers``, ``memory_limit``, ``sample_size``,
    ``backend``, ``n_jobs``, ``chunksize``, ``history``) as :func:`execute` would.

    The integrations call it when a task is declared, so that a DAG or flow with a bad option
    fails when it is loaded, not hours later when its task runs.

    Raises:
        TypeError, ValueError: naming the option, what was expected and what was got.
    """
    Options.build(options)


def check_callable(func: object) -> None:
    if not callable(func):
        raise TypeError(f"`func` must be callable (a function of one item), got {func!r}")


def items_or_data(items: Any, data: Any) -> Any:
    """The items, given as ``items`` or as ``data`` (the original Amorsize's name), once."""
    if items is NOT_GIVEN and data is NOT_GIVEN:
        raise TypeError("missing the items to map: pass them as `items` (or `data`)")
    if items is not NOT_GIVEN and data is not NOT_GIVEN:
        raise TypeError("the items were given twice: pass `items` or `data`, not both")
    return data if items is NOT_GIVEN else items


def check_items(items: object) -> Iterable[Any]:
    if isinstance(items, (str, bytes)):
        raise TypeError(
            f"`items` must be an iterable of items, got a {type(items).__name__}; wrap a single "
            f"item in a list"
        )
    if not isinstance(items, Iterable):
        raise TypeError(f"`items` must be an iterable (a list, a generator, ...), got {items!r}")
    return items
