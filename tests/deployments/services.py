"""Long-running processes of a deployment started by a test, each logging to a file of its own,
all stopped (their process trees killed) when the test ends, however it ends."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 10.0


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    ready: Callable[[], T | None],
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
) -> T:
    """``ready()`` once it returns something other than None; fail after ``timeout`` seconds
    naming ``what`` was awaited, or at once where ``check`` raises (a service died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        if (value := ready()) is not None:
            return value
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


class Services:
    """Named processes in ``log_dir``; a context manager that stops them all at the end."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir, self.env = log_dir, env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes[name] = process
        return process

    def log(self, name: str, lines: int = 40) -> str:
        text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        """Raise, with its log's end, where a service has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}; its log ends:\n{self.log(name)}"
                )

    def stop(self) -> None:
        """Terminate each service's whole process tree; kill what outlives the grace period."""
        trees: list[psutil.Process] = []
        for process in self.processes.values():
            try:
                root = psutil.Process(process.pid)
                trees += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        for member in trees:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.terminate()
        _, alive = psutil.wait_procs(trees, timeout=STOP_GRACE_SECONDS)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(alive, timeout=STOP_GRACE_SECONDS)


def map_workers(pid_notes: Path) -> tuple[int, set[int]] | None:
    """(a map's caller process, its worker processes) once two workers have run a call, from
    the "pid parent-pid" lines that tests.workloads.busy_noting_pids appends."""
    if not pid_notes.exists():
        return None
    children: dict[int, set[int]] = {}
    for line in pid_notes.read_text().splitlines():
        pid, parent = map(int, line.split())
        children.setdefault(parent, set()).add(pid)
    found = [(parent, pids) for parent, pids in children.items() if len(pids) >= 2]
    return found[0] if found else None


def wait_for_exit(pids: set[int], timeout: float, what: str) -> None:
    """Return once none of ``pids`` runs (zombies count as gone); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while alive := [pid for pid in pids if _running(pid)]:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: processes {alive} still run after {timeout:.0f} s")
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
