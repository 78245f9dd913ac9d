"""Progress of a map: a tqdm bar, or the caller's own callable, told as chunks finish."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm

__all__ = ["Progress", "progress_reporter"]

# ``progress=`` of execute and friends: a bar (True), none (False), or a callable (done, total).
Progress = bool | Callable[[int, "int | None"], None]


class _ProgressBar(tqdm):
    """tqdm's bar without its monitor thread, which outlives every bar: with another thread
    alive, a process must not fork (fork_is_safe), so after one map with a progress bar every
    later map in the process started fresh interpreters (a second or more each, with imports)
    instead of forking workers. The monitor only adjusts bars updated rarely; ours update on
    every chunk."""

    monitor_interval = 0


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
        with _ProgressBar(total=total, initial=initial, unit="item", desc="amorsize") as bar:
            yield bar.update
        return
    done = initial

    def report(n_items: int) -> None:
        nonlocal done
        done += n_items
        progress(done, total)

    yield report
