"""Whether the calling thread runs inside a map: as its caller, one of its worker threads, or in
one of its worker processes. A map started there must not wait for the node's worker slots:
those it would wait for may be its outer map's."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from ..probes.processes import in_pool_worker

__all__ = ["in_a_map", "inside_a_map"]

_this_thread = threading.local()  # .maps: how many maps this thread is inside


def inside_a_map() -> bool:
    return in_pool_worker() or getattr(_this_thread, "maps", 0) > 0


@contextlib.contextmanager
def in_a_map() -> Iterator[None]:
    """Mark the calling thread as inside a map while the block runs."""
    _this_thread.maps = getattr(_this_thread, "maps", 0) + 1
    try:
        yield
    finally:
        _this_thread.maps -= 1
