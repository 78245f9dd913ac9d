"""What the model decides from: the measured situation, and the settings the caller fixed."""

from __future__ import annotations

from dataclasses import dataclass

from ..measure.calibration import Calibration
from ..measure.limits import MAX_WORKERS_ENV, WorkerLimits
from ..measure.profile import Profile

__all__ = ["FREE", "MIN_GAIN", "THREADS_PER_CPU", "Constraints", "Situation", "max_threads"]

# A parallel plan must be predicted this share faster than a plain loop: the model's errors are of
# that order, and a loop never deadlocks, pickles or OOMs. (docs/decisions.md#minimum-gain)
MIN_GAIN = 0.10
# Threads per CPU at most, for calls that mostly wait: past this, per-thread overhead and the
# servers waited on are the limit. (docs/decisions.md#threads-per-cpu)
THREADS_PER_CPU = 32


@dataclass(frozen=True)
class Constraints:
    """Settings the caller fixed; the model searches only what is left open."""

    backend: str | None = None
    n_jobs: int | None = None
    chunksize: int | None = None

    @property
    def free(self) -> bool:
        """Whether the caller fixed nothing: the model chooses every setting."""
        return self.backend is None and self.n_jobs is None and self.chunksize is None


FREE = Constraints()  # nothing fixed: the model chooses every setting


@dataclass(frozen=True)
class Situation:
    """Everything the model decides from.

    Attributes:
        n_remaining: items still to map (the dry run's are done).
        n_items: all items of the map, or None for an iterator of unknown length.
        spent_seconds: seconds already spent on this call (the dry run).
        parent_warm: whether the caller has run the function already (its warm state is then
            inherited by forked workers).
        fork_safe: whether forking is safe now (a single-threaded caller on a POSIX system).
        observed_startup: (start method, seconds) a previous run measured to start its workers,
            which includes importing the function's module, unlike the calibration.
        calibration: the machine's costs; None for a map too small for any pool to pay off,
            which is then planned serially without measuring the machine.
        unmodelled_process_seconds: seconds a previous process map of this stage took beyond
            the model's prediction, added to every process candidate.
        min_gain: the share of the serial time a parallel plan must save to be chosen; more
            than MIN_GAIN where the evidence is known to be noisy.
    """

    profile: Profile
    limits: WorkerLimits
    calibration: Calibration | None
    n_remaining: int
    n_items: int | None
    spent_seconds: float = 0.0
    parent_warm: bool = True
    fork_safe: bool = True
    observed_startup: tuple[str, float] | None = None
    unmodelled_process_seconds: float = 0.0
    min_gain: float = MIN_GAIN


def max_threads(limits: WorkerLimits) -> int:
    """The most threads a map may use: many per CPU for waiting work, unless the caller capped it."""
    if limits.cpus_source in (MAX_WORKERS_ENV, "max_workers argument"):
        return limits.cpus  # the caller capped workers of every kind
    return THREADS_PER_CPU * limits.cpus
