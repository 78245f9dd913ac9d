"""Lock files shared by every process of this user on the node: the node's worker slots, one
file a slot, and a lock that lets one process at a time do a thing (calibrate the machine).

A slot is held by a POSIX record lock (``fcntl.lockf``) on its file. The kernel drops it when the
holder exits, however it dies, so a crashed map never keeps its slots; and forked workers do not
inherit it, so a worker outliving its map could not keep one either. No server, no cleanup.

POSIX locks belong to a process, not to a file descriptor: two maps in one process (threads of
an orchestrator's task runner) would both get the same lock, and the first to close its file
would drop the other's. So this process's slots are also kept in a registry, which each map
consults before the files.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no shared slots, every map plans alone
    fcntl = None  # type: ignore[assignment]

__all__ = ["RUNTIME_DIR_ENV", "SlotFiles", "exclusive", "runtime_dir"]

RUNTIME_DIR_ENV = "AMORSIZE_RUNTIME_DIR"

_held_here: set[str] = set()  # the slot files this process holds, whichever map holds them
_registry = threading.Lock()


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """Hold the lock file ``path`` while the block runs, waiting for any other process that holds
    it; without file locks (not POSIX), just run the block."""
    if fcntl is None:
        yield
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with _registry:  # one thread of this process at a time: POSIX locks are per process
            fcntl.lockf(descriptor, fcntl.LOCK_EX)
            yield
    finally:
        os.close(descriptor)


def runtime_dir() -> str:
    """Where the slot files live: ``AMORSIZE_RUNTIME_DIR``, else the user's runtime directory
    (``XDG_RUNTIME_DIR``) or the temporary one, per user. A container has its own, as it has its
    own CPU quota."""
    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        return explicit
    import tempfile  # only for maps long enough to share the node

    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(base, f"amorsize-flows-{user}")


class SlotFiles:
    """``count`` slots in ``directory``; :meth:`take` locks free ones, :meth:`release` them all."""

    def __init__(self, directory: str, count: int) -> None:
        self.directory, self.count = directory, count
        self._held: dict[int, int] = {}  # slot -> open descriptor holding its lock

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def available(self) -> bool:
        """Whether slots can be shared here at all (a POSIX system, a writable directory)."""
        if fcntl is None:
            return False
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        except OSError:
            return False
        return os.access(self.directory, os.W_OK)

    def take(self, wanted: int) -> int:
        """Lock up to ``wanted`` slots in all, without waiting; return how many are held."""
        with _registry:
            for slot in range(self.count):
                if len(self._held) >= wanted:
                    break
                path = self._path(slot)
                if path not in _held_here and (descriptor := _lock(path)) is not None:
                    _held_here.add(path)
                    self._held[slot] = descriptor
        return len(self._held)

    def free(self) -> int:
        """How many slots no process holds now (each tried and let go)."""
        free = 0
        with _registry:
            for slot in range(self.count):
                path = self._path(slot)
                if path in _held_here:
                    continue
                descriptor = _lock(path)
                if descriptor is not None:
                    free += 1
                    os.close(descriptor)
        return free

    def release(self) -> None:
        """Let every held slot go (closing its file drops the lock)."""
        self.keep(0)

    def keep(self, count: int) -> None:
        """Let the held slots beyond the first ``count`` go."""
        with _registry:
            for slot in sorted(self._held)[count:]:
                _held_here.discard(self._path(slot))
                os.close(self._held.pop(slot))

    def _path(self, slot: int) -> str:
        return os.path.join(self.directory, f"slot-{slot}")


def _lock(path: str) -> int | None:
    """An open descriptor of ``path`` holding its lock, or None where another process holds it."""
    assert fcntl is not None
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor
