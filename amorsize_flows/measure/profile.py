"""What one call of a function costs, as the dry run (or a previous run's record) measured it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from . import gil_probe

__all__ = ["INTERNAL_THREADS_RATIO", "Batch", "Profile"]

# Above this CPU seconds per wall second, a call runs threads of its own (BLAS, OpenMP): one busy
# thread reads 1.0 give or take 0.2 over a dry run of milliseconds. (docs/decisions.md#cpu-ratio)
INTERNAL_THREADS_RATIO = 1.5


@dataclass(frozen=True)
class Profile:
    """What one call of the function costs, measured in the caller.

    Attributes:
        first_call_seconds: the first call, warm-up (lazy imports, a model loaded) included.
        seconds_per_item: mean wall seconds of a call after the first, the GIL probe's too.
        seconds_stdev: their standard deviation (skew makes a slow tail).
        cpu_seconds_per_item: mean CPU seconds of the process per call, a wait for a CPU held
            by other processes counted as CPU time (threads could not overlap it); far below
            the wall time means waiting (I/O), far above means threads of its own (BLAS).
        single_thread_seconds: for such a function, a call with its threads capped to one
            (0 when not measured).
        gil_share: the share of a busy call that holds the GIL, measured by two calls at once on
            two threads (0: threads overlap fully, 1: not at all); None when not measured.
        bytes_in_per_item, bytes_out_per_item: pickled sizes of an input and of a result.
        pickle_seconds_in, pickle_seconds_out: seconds to pickle and unpickle one of each.
        function_bytes: the pickled size of the function (cloudpickle).
        warm_memory_bytes: memory the first call kept (a loaded model, caches).
        item_memory_bytes: memory one call needs: its peak while it runs where that was
            measured, and at least what it keeps and its result's size.
        sampled_items: calls made; sample_seconds: wall seconds of the whole dry run.
        picklable: whether the function, inputs and results can go to another process.
        not_picklable_reason: why not, when they cannot.
    """

    first_call_seconds: float
    seconds_per_item: float
    seconds_stdev: float = 0.0
    cpu_seconds_per_item: float = 0.0
    single_thread_seconds: float = 0.0
    gil_share: float | None = None
    bytes_in_per_item: float = 0.0
    bytes_out_per_item: float = 0.0
    pickle_seconds_in: float = 0.0
    pickle_seconds_out: float = 0.0
    function_bytes: int = 0
    warm_memory_bytes: int = 0
    item_memory_bytes: int = 0
    sampled_items: int = 0
    sample_seconds: float = 0.0
    picklable: bool = True
    not_picklable_reason: str = ""

    @property
    def warmup_seconds(self) -> float:
        """What the first call cost beyond a steady one: paid again by every fresh worker."""
        return max(0.0, self.first_call_seconds - self.seconds_per_item)

    @property
    def cpu_ratio(self) -> float:
        """CPU seconds per wall second of a call (0 = all waiting, 1 = one busy thread)."""
        return self.cpu_seconds_per_item / self.seconds_per_item if self.seconds_per_item else 1.0

    def lacks_gil_share(self, *, processes_possible: bool, fork_possible: bool) -> bool:
        """Whether the GIL share, not measured, could change a plan made from this profile."""
        return self.gil_share is None and gil_probe.can_matter(
            self.cpu_ratio,
            self.seconds_per_item,
            self.pickle_seconds_in + self.pickle_seconds_out,
            picklable=self.picklable,
            processes_possible=processes_possible,
            fork_possible=fork_possible,
        )

    @property
    def busy(self) -> bool:
        """Whether a call spends most of its time on the CPU rather than waiting (see gil_probe)."""
        return self.cpu_ratio >= gil_probe.GIL_PROBE_RATIO

    @property
    def runs_own_threads(self) -> bool:
        """Whether a call keeps more than one CPU busy: threads of its own (BLAS, OpenMP)."""
        return self.cpu_ratio > INTERNAL_THREADS_RATIO

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        # Every field is a flat, immutable value: asdict's recursive deep copy is not needed, and
        # this runs before every map.
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        known = {f.name: f for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        return cls(**values)


@dataclass(frozen=True)
class Batch:
    """Consecutive items run in the caller: where they start, how many, seconds per call."""

    first: int
    items: int
    seconds_per_item: float

    @property
    def middle(self) -> float:
        return self.first + (self.items - 1) / 2
