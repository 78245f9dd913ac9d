"""A previous run's record as evidence for the next run: does it still describe this map?

A scheduled pipeline maps the same function over similar items every night: a record that fits
spares the dry run, and tells the model what the last run's workers really cost.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator, Sized
from typing import Any

from ..data.plan import RunRecord
from ..measure.profile import Profile
from .situation import MIN_GAIN

__all__ = ["min_gain", "observed_startup", "usable_history"]

# A record's costs are trusted for items whose pickled size is within this factor of those it
# measured; beyond, per-item costs have likely changed too. (docs/decisions.md#records-as-evidence)
HISTORY_SIZE_TOLERANCE = 4.0
# From a serial run's record, one run's timing on a host whose speed varies, a parallel plan must
# be estimated this much faster. (docs/decisions.md#records-as-evidence)
SWITCH_FROM_SERIAL_SPEEDUP = 1.5


def usable_history(
    record: RunRecord,
    identity: tuple[str, str],
    items: Iterable[Any],
    *,
    processes_possible: bool,
    fork_possible: bool,
    probes_fit: bool = True,
) -> tuple[Profile | None, str, Iterable[Any]]:
    """The profile of a previous run's record if it still describes this map (else None), why,
    and the items (re-chained). ``probes_fit``: whether a dry run would have items to spare for
    the GIL probe (else a record without the GIL share is as good as a dry run)."""
    if record.function_digest != identity[1] or not record.profile:
        return None, f"it measured {record.function or 'another function'} or older code", items
    profile = Profile.from_dict(record.profile)
    if probes_fit and profile.lacks_gil_share(
        processes_possible=processes_possible, fork_possible=fork_possible
    ):
        # Recorded where processes could fork, or before the probe ran in this case; sampled
        # once, the next record carries the share.
        return None, "it did not measure whether the calls hold the GIL, as threads need", items
    iterator = iter(items)
    try:
        first = next(iterator)
    except StopIteration:
        return profile, "no items", []
    rechained: Iterable[Any] = items if isinstance(items, Sized) else _prepend(first, iterator)
    recorded = float(record.profile.get("bytes_in_per_item", 0.0))
    try:
        size = len(pickle.dumps(first, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        size = 0
    if (
        recorded > 0
        and size > 0
        and not (1 / HISTORY_SIZE_TOLERANCE <= size / recorded <= HISTORY_SIZE_TOLERANCE)
    ):
        return None, f"items are {size / recorded:.1f}x the size it measured", rechained
    return (
        profile,
        f"starting from the run of {record.finished_at} ({record.n_items} items)",
        rechained,
    )


def _prepend(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def min_gain(record: RunRecord) -> float:
    """What a parallel plan must save to be chosen from ``record`` (SWITCH_FROM_SERIAL_SPEEDUP)."""
    return 1 - 1 / SWITCH_FROM_SERIAL_SPEEDUP if record.backend == "serial" else MIN_GAIN


def observed_startup(record: RunRecord) -> tuple[str, float] | None:
    """(start method, seconds) of the workers the recorded run started, if it started any."""
    if record.backend == "processes" and record.start_method and record.startup_seconds > 0:
        return record.start_method, record.startup_seconds
    return None
