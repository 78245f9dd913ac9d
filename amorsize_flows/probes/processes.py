"""Facts about this process that decide which workers it may start, and a fresh interpreter for
measuring what a worker would pay."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["fork_is_safe", "is_daemonic", "run_fresh_python"]

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def fork_is_safe() -> bool:
    """Forking copies only the calling thread: with other threads alive, a lock they held stays
    held forever in the child. Fork only from a single-threaded process."""
    return hasattr(os, "fork") and threading.active_count() == 1


def is_daemonic() -> bool:
    """Whether this process is daemonic (a Celery or Dask worker's), where ``multiprocessing``
    refuses to start children."""
    return bool(multiprocessing.current_process().daemon)


def run_fresh_python(
    arguments: Sequence[str], *, stdin: bytes | None = None, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python ARGUMENTS`` in a fresh interpreter that imports what this one does (this
    package and ``sys.path``, as loky's workers see them); raise CalledProcessError on failure."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, *sys.path]))
    return subprocess.run(
        [sys.executable, *arguments],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
        check=True,
    )
