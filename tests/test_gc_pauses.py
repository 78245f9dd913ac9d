"""Timing the garbage collector's pauses of one thread."""

from __future__ import annotations

import gc
import threading

from amorsize_flows.probes.gc_pauses import CollectionTime


def test_counts_this_thread_s_collections_and_not_another_s() -> None:
    ballast = [[] for _ in range(200_000)]  # a heap whose collection takes a while
    # Only the collections asked for: starting a thread allocates, and once in a full run an
    # automatic collection in this thread was counted (21 µs), as it should be.
    gc.disable()
    try:
        with CollectionTime() as collections:
            other = threading.Thread(target=gc.collect)
            other.start()
            other.join()
            assert collections.seconds == 0.0
            gc.collect()
            assert collections.seconds > 0.0
    finally:
        gc.enable()
    assert collections._observe not in gc.callbacks
    del ballast
