"""Time the cyclic garbage collector spends, to keep its pauses out of per-call timings.

A collection walks every tracked object of the heap, however few the calls that triggered it: a
pause of a millisecond lands on whichever call or batch allocated last. Both the dry run and the
serial runner's checks time calls to predict the rest of a map, and any plan pays the pauses of
building its results in the caller alike, so both leave them out.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time

__all__ = ["CollectionTime"]


class CollectionTime(contextlib.AbstractContextManager["CollectionTime"]):
    """Seconds the cyclic garbage collector ran, in the thread that entered this, while it was
    entered (gc.callbacks). Other threads' collections (a Prefect engine's, beside a task) are
    not this thread's pauses: calls that release the GIL run on meanwhile."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        self._thread = 0

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self._thread:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> CollectionTime:
        self._thread = threading.get_ident()
        gc.callbacks.append(self._observe)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._observe)
