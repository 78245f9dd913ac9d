"""The core's log records, sent to the Prefect run logger of the task that mapped."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

__all__ = ["Logger", "forward_core_logs", "run_logger"]

log = logging.getLogger(__name__)

Logger = logging.Logger | logging.LoggerAdapter[Any]


def run_logger() -> Logger:
    try:
        return get_run_logger()
    except MissingContextError:  # the task's function called directly, outside a run
        return log


@contextlib.contextmanager
def forward_core_logs(logger: Logger) -> Iterator[None]:
    """Send what the core logs in this thread (its warnings: a fallback, a fork refused) to the
    run logger, where the user looks; other threads' maps keep their own."""
    if logger is log:  # outside a run the core's records already reach the same handlers
        yield
        return
    handler = _ThreadForwarder(logger)
    core = logging.getLogger("amorsize_flows")
    core.addHandler(handler)
    try:
        yield
    finally:
        core.removeHandler(handler)


class _ThreadForwarder(logging.Handler):
    def __init__(self, target: Logger) -> None:
        super().__init__()
        self._target = target
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread and not record.name.startswith(__package__ or __name__):
            self._target.log(record.levelno, "%s", record.getMessage())
