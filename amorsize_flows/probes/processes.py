"""Facts about this process that decide which workers it may start, and a fresh interpreter for
measuring what a worker would pay."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence

__all__ = [
    "FreshPythonTimedOut",
    "FreshPythonFailed",
    "fork_is_safe",
    "in_pool_worker",
    "is_daemonic",
    "mark_pool_worker",
    "run_fresh_python",
]

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FreshPythonFailed(Exception):
    """Raised when a fresh interpreter could not start, failed, or ran out of time; the message
    ends with what it printed on stderr."""


class FreshPythonTimedOut(FreshPythonFailed):
    """Raised when a fresh interpreter outlived its ``timeout``."""


_in_pool_worker = False


def mark_pool_worker() -> None:
    """This process is a worker of a map's process pool (set by the worker's initializer)."""
    global _in_pool_worker
    _in_pool_worker = True


def in_pool_worker() -> bool:
    """Whether this process is a worker of a map's process pool, where loky starts no pool of
    its own (its nesting limit)."""
    return _in_pool_worker


def fork_is_safe() -> bool:
    """Forking copies only the calling thread: with other threads alive, a lock they held stays
    held forever in the child. Fork only from a single-threaded process."""
    return hasattr(os, "fork") and threading.active_count() == 1


def is_daemonic() -> bool:
    """Whether this process is daemonic (a Celery or Dask worker's), where ``multiprocessing``
    refuses to start children. A process that multiprocessing started has imported it already:
    one that has not is no child of it, and is spared the import."""
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and bool(multiprocessing.current_process().daemon)


def run_fresh_python(
    arguments: Sequence[str], *, stdin: bytes | None = None, timeout: float
) -> str:
    """Run ``python ARGUMENTS`` in a fresh interpreter that imports what this one does (this
    package and ``sys.path``, as loky's workers see them), and return what it printed.

    Raises:
        FreshPythonFailed: it could not start, exited with an error, or outlived ``timeout``.
    """
    import subprocess  # only where a fresh interpreter is measured

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, *sys.path]))
    try:
        done = subprocess.run(
            [sys.executable, *arguments],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired as error:
        raise FreshPythonTimedOut(f"still running after {timeout:.2f} s") from error
    except (OSError, subprocess.SubprocessError) as error:
        stderr = (getattr(error, "stderr", b"") or b"").decode(errors="replace").strip()
        raise FreshPythonFailed(f"{error} {stderr[-500:]}".strip()) from error
    return done.stdout.decode()
