"""What a running map measured, filled in chunk by chunk: the evidence its record is built from."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..probes import run_queue

__all__ = ["RunStats"]


@dataclass
class RunStats:
    """What the map measured, filled in while it runs."""

    items: int = 0
    compute_seconds: float = 0.0
    cpu_seconds: float = 0.0
    queued_seconds: float = 0.0  # of compute_seconds: ready to run, not running (run_queue)
    startup_seconds: float = 0.0
    peak_chunk_bytes: int = 0  # the most a worker process's chunk took beyond its memory before
    started_at: float = field(default_factory=time.perf_counter)
    finished_at: float = 0.0
    _workers_started_at: float | None = None
    _first_result: bool = True

    def workers_start(self) -> None:
        """Workers start now, after serial batches: what their first result waits for is their
        start-up, which the next run's plan learns from."""
        self._workers_started_at = time.perf_counter()
        self._first_result = True

    def add_chunk(
        self,
        n_items: int,
        compute_seconds: float,
        cpu_seconds: float,
        queued_seconds: float,
        peak_bytes: int = 0,
    ) -> None:
        if self._first_result:
            self._first_result = False
            waited = time.perf_counter() - (self._workers_started_at or self.started_at)
            self.startup_seconds = max(0.0, waited - compute_seconds)
        self.items += n_items
        self.compute_seconds += compute_seconds
        self.cpu_seconds += cpu_seconds
        self.queued_seconds += queued_seconds
        self.peak_chunk_bytes = max(self.peak_chunk_bytes, peak_bytes)

    @property
    def cpu_ratio(self) -> float:
        """CPU seconds per wall second of the calls, their waits for a CPU counted as busy, as
        the dry run reads it (run_queue.cpu_ratio); 1.0 before any call was timed."""
        return run_queue.cpu_ratio(self.cpu_seconds, self.compute_seconds, self.queued_seconds)
