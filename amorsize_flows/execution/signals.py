"""SIGTERM and Ctrl-C stop a map in the caller, so that its worker processes are killed."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from ..data.errors import MapCancelledError

__all__ = ["signals_stop_the_map"]


@contextlib.contextmanager
def signals_stop_the_map(needed: bool, cancel: threading.Event | None) -> Iterator[None]:
    """Make SIGTERM and Ctrl-C (SIGINT) stop the map in the caller, so that the workers are killed.

    Python's default SIGTERM action ends the process at once, skipping every clean-up and leaving
    process workers orphaned. Only default handlers are replaced: an orchestrator's own (Airflow,
    Prefect) stays in charge, and cancels the map through ``cancel`` or its own exception.

    A handler raises where the caller happens to be, and some places swallow it (logging's
    at-fork hook): so the handler also sets ``cancel``, which the runner polls, and its
    MapCancelledError is turned into what the signal would have raised
    (docs/decisions.md#cancellation).
    """
    # Serial and thread maps leave no process behind: they skip even the signal module's import.
    if not needed or threading.current_thread() is not threading.main_thread():
        yield
        return
    import signal

    replaced = {
        signum: handler
        for signum, handler in (
            (signal.SIGTERM, signal.SIG_DFL),
            (signal.SIGINT, signal.default_int_handler),
        )
        if signal.getsignal(signum) is handler
    }
    if not replaced:
        yield
        return
    raised: list[BaseException] = []

    def stop_the_map(signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            error: BaseException = KeyboardInterrupt()
        else:
            error = MapCancelledError(
                "SIGTERM received: the map was stopped and its workers killed"
            )
        raised.append(error)
        if cancel is not None:
            cancel.set()
        raise error

    for signum in replaced:
        signal.signal(signum, stop_the_map)
    try:
        yield
    except MapCancelledError as error:
        if raised and error is not raised[0]:
            raise raised[0] from None  # the runner saw ``cancel``: the signal's own error
        raise
    finally:
        for signum, handler in replaced.items():
            signal.signal(signum, handler)
