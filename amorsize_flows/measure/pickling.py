"""Whether a function, its items and its results pickle, and what pickling them costs: the price
of handing chunks to worker processes."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PICKLE_PROBES", "Pickling"]

# Items and results pickled, as one list each, to price their transfer: sizes vary less than
# durations, and a list prices a chunk, not a lone pickle's fixed cost. (docs/decisions.md#pickling)
PICKLE_PROBES = 8
# A pickling this quick is timed again and the faster kept: a process's first pickle pays
# one-time costs. (docs/decisions.md#pickling)
QUICK_PICKLE_SECONDS = 1e-3


class Pickling:
    """Whether the function, items and results pickle, and what the first items and results
    cost to pickle, as one list each (as a chunk travels)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.function_bytes, self.not_picklable = _pickled_function_size(func)
        self.bytes_in = self.bytes_out = self.seconds_in = self.seconds_out = 0.0  # per item
        self._items: list[Any] = []
        self._results: list[Any] = []
        self._probing = True  # until measure() has pickled what was kept

    def keep(self, items: list[Any], results: list[Any], up_to: int) -> None:
        """Keep items and their results to pickle later, until ``up_to`` are kept."""
        room = max(0, up_to - len(self._items)) if self._probing else 0
        if room:
            self._items += items[:room]
            self._results += results[:room]

    def measure(self, start_index: int) -> None:
        """Sizes and pickling times per item; any pickling error rules processes out."""
        self._probing = False
        count = len(self._items)
        if not count or self.not_picklable:
            return
        try:
            size_in, seconds_in = _probe_pickle(self._items)
            size_out, seconds_out = _probe_pickle(self._results)
        except Exception:
            self.not_picklable = self._first_unpicklable(start_index)
            return
        finally:
            self._items, self._results = [], []
        self.bytes_in, self.bytes_out = size_in / count, size_out / count
        self.seconds_in, self.seconds_out = seconds_in / count, seconds_out / count

    def _first_unpicklable(self, start_index: int) -> str:
        for offset, pair in enumerate(zip(self._items, self._results, strict=True)):
            try:
                pickle.dumps(pair, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:
                return f"item {start_index + offset} or its result does not pickle ({error})"
        return "the items or their results do not pickle"


def _pickled_function_size(func: Callable[..., Any]) -> tuple[int, str]:
    """The function's pickled size, or why it does not pickle. Plain pickle first: it gives
    importable functions the same bytes as cloudpickle, which is slow to import
    (docs/decisions.md#pickling)."""
    try:
        return len(pickle.dumps(func, protocol=pickle.HIGHEST_PROTOCOL)), ""
    except Exception:
        pass
    import cloudpickle  # lambdas and closures

    try:
        return len(cloudpickle.dumps(func)), ""
    except Exception as error:
        return 0, f"the function does not pickle, even with cloudpickle ({error})"


def _probe_pickle(value: object) -> tuple[int, float]:
    """Bytes of ``value`` pickled, and seconds to pickle and unpickle it (a quick one twice,
    the faster kept: QUICK_PICKLE_SECONDS)."""
    size, seconds = _time_pickle(value)
    if seconds < QUICK_PICKLE_SECONDS:
        seconds = min(seconds, _time_pickle(value)[1])
    return size, seconds


def _time_pickle(value: object) -> tuple[int, float]:
    started = time.perf_counter()
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(data)
    return len(data), time.perf_counter() - started
