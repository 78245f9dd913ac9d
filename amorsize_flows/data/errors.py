"""The exceptions amorsize-flows raises, each narrow enough to catch on purpose."""

from __future__ import annotations

__all__ = [
    "AmorsizeError",
    "InvalidPlanError",
    "MapCancelledError",
    "WorkerDiedError",
]


class AmorsizeError(Exception):
    """Base class of every error raised by amorsize-flows itself.

    An exception raised by the mapped function is never wrapped: it is re-raised as it was, with
    a note naming the item that raised it.
    """


class InvalidPlanError(AmorsizeError, ValueError):
    """Raised when a stored plan or run record is malformed, of another schema, or hostile."""


class WorkerDiedError(AmorsizeError):
    """Raised when a worker process died (segfault, OOM kill, ``os._exit``) during a map."""


class MapCancelledError(AmorsizeError):
    """Raised when a map was cancelled (SIGTERM, an orchestrator's kill) before it finished."""
