"""The most memory a call takes while it runs, beyond what the process held before it.

A call that allocates and frees 1.5 GB returns having grown the process by nothing; its peak is
what decides how many such calls fit side by side. On Linux the process's peak resident set
(VmHWM) is reset before the call and read after it; elsewhere nothing is measured, and the model
counts only what calls keep and return.
"""

from __future__ import annotations

from ..probes.procfs import peak_resident_bytes, reset_peak_resident, resident_bytes

__all__ = ["PEAK_MIN_SECONDS", "PEAK_WATCHED_CALLS", "PeakMemory"]

# Calls quicker than this are not watched: writing pages at a few GB/s, such a call cannot touch
# more than megabytes, and the reading would cost a share of it; nor more steady calls than
# PEAK_WATCHED_CALLS, since each reading releases the GIL. (docs/decisions.md#peak-memory)
PEAK_MIN_SECONDS = 1e-3
PEAK_WATCHED_CALLS = 3


class PeakMemory:
    """The largest peak of the calls watched so far, beyond what the process held before and
    after each (what a call keeps is counted apart), in bytes; 0 where none could be read."""

    def __init__(self) -> None:
        self.bytes = 0
        self.watched = 0
        self._before: int | None = None

    def start(self) -> None:
        """Before a call: the peak from here on is the call's."""
        self._before = resident_bytes() if reset_peak_resident() else None

    def stop(self) -> None:
        """After a call: keep its peak beyond what the process held before it."""
        if self._before is None:
            return
        peak = peak_resident_bytes()
        if peak is not None:
            self.bytes = max(self.bytes, peak - max(self._before, resident_bytes()))
            self.watched += 1
        self._before = None
