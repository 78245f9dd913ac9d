"""A background thread beside a running map: it cancels the map when the flow run is cancelled,
and pushes the map's progress artifact."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import uuid

from prefect.client.orchestration import get_client

from ._logs import Logger
from .artifacts import ProgressReporter

__all__ = ["WATCH_SECONDS", "Watcher"]

# How often the watcher reads the flow run's state (and pushes progress): a person who clicks
# Cancel waits about this much longer than Prefect's own cancellation; it costs one small API read
# per second per running map, and none for maps shorter than that.
WATCH_SECONDS = 1.0


class Watcher:
    """A background thread that cancels the map when the flow run is cancelled, and pushes progress.

    It runs in a copy of the task's context, so it talks to the same Prefect API with the same
    settings (a test harness, a profile) and links artifacts to the same task run. It reads nothing
    until the map has run for WATCH_SECONDS, so short maps cost one idle thread and no API call.
    """

    def __init__(
        self, flow_run_id: uuid.UUID | None, progress: ProgressReporter, logger: Logger
    ) -> None:
        self.cancel = threading.Event()
        self.reason: str | None = None
        self._flow_run_id = flow_run_id
        self._progress = progress
        self._logger = logger
        self._stop = threading.Event()
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._watch,), name="amorsize-watch", daemon=True
        )

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Not joined: it may be inside an API call; it stops at its next tick, touching nothing.
        self._stop.set()

    def _watch(self) -> None:
        warned = False
        with contextlib.ExitStack() as stack:
            client = None
            while not self._stop.wait(WATCH_SECONDS):
                self._progress.push()
                if self._flow_run_id is None:
                    continue
                try:
                    if client is None:
                        client = stack.enter_context(get_client(sync_client=True))
                    state = client.read_flow_run(self._flow_run_id).state
                except Exception as error:  # the map goes on; cancellation falls back to SIGTERM
                    if not warned:
                        self._logger.warning(
                            "amorsize: cannot read the flow run's state (%s); cancelling the flow "
                            "run will stop this map only through Prefect's own signals",
                            error,
                        )
                        warned = True
                    continue
                if state is not None and (state.is_cancelling() or state.is_cancelled()):
                    self.reason = f"the flow run is {state.name}"
                    self.cancel.set()
                    return
