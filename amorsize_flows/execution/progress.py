"""Progress of a map: a tqdm bar, or the caller's own callable, told as chunks finish."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Progress", "progress_reporter"]

# ``progress=`` of execute and friends: a bar (True), none (False), or a callable (done, total).
Progress = bool | Callable[[int, "int | None"], None]


@contextlib.contextmanager
def progress_reporter(
    progress: Progress, total: int | None, initial: int
) -> Iterator[Callable[[int], None] | None]:
    """What to tell each finished chunk's item count (None: nobody asked); ``initial`` items
    are done before the first (the dry run's)."""
    if progress is False:
        yield None
        return
    if progress is True:
        with _progress_bar()(total=total, initial=initial, unit="item", desc="amorsize") as bar:
            yield bar.update
        return
    done = initial

    def report(n_items: int) -> None:
        nonlocal done
        done += n_items
        progress(done, total)

    yield report


@functools.cache
def _progress_bar() -> type[Any]:
    from tqdm.auto import tqdm  # imported only where a bar is asked for

    class ProgressBar(tqdm):  # type: ignore[misc, valid-type]
        """tqdm's bar without its monitor thread, which outlives every bar: with another thread
        alive a process must not fork, and later maps would start fresh interpreters instead.
        The monitor only adjusts bars updated rarely; ours update on every chunk."""

        monitor_interval = 0

    return ProgressBar
