"""Shared test set-up: a private calibration cache, so tests never touch the user's, and a core
test may leave no thread running behind it."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host import stolen_seconds

# Set before amorsize_flows is imported anywhere: the calibration cache is read lazily, but a
# test session must neither read nor write the developer's own cache.
os.environ.setdefault("AMORSIZE_CACHE_DIR", tempfile.mkdtemp(prefix="amorsize-test-cache-"))
# Nor share the node's worker slots with maps outside it (a benchmark, another session's tests).
os.environ.setdefault("AMORSIZE_RUNTIME_DIR", tempfile.mkdtemp(prefix="amorsize-test-slots-"))

# The orchestrators keep threads of their own for the whole session (Prefect's API client and
# event loop, Airflow's log handlers, a Dask client's): their suites are not held to this.
_ORCHESTRATOR_SUITES = ("airflow", "prefect", "deployments")
# Pools join their threads on shutdown; loky's manager thread can take a moment after that.
THREAD_EXIT_GRACE_SECONDS = 2.0
# A BLAS pool's threads spin 80 to 90 ms after they last ran: a test waits, at most this long,
# until the process's other threads leave the CPUs alone.
QUIET_WAIT_SECONDS = 1.0
QUIET_WINDOW_SECONDS = 0.02


_STOLEN_DURING_CALL = pytest.StashKey[float]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Note how much CPU time the host took away while the test ran."""
    stolen = stolen_seconds()
    try:
        return (yield)
    finally:
        item.stash[_STOLEN_DURING_CALL] = stolen_seconds() - stolen


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[pytest.TestReport]:
    """Say, under a failed test, what the host took away meanwhile: tests of timing and
    scheduling read it as waiting, and a failure then is no evidence against the code."""
    report = yield
    if report.when == "call" and report.failed and _STOLEN_DURING_CALL in item.stash:
        stolen = item.stash[_STOLEN_DURING_CALL]
        report.sections.append(
            ("host", f"the host took {stolen:.2f} s of CPU time away during this test (steal)")
        )
    return report


@pytest.fixture(autouse=True)
def no_thread_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a core test that leaves a thread alive. While a second thread runs, forking is unsafe
    and every later map starts fresh interpreters instead: the tests after it would silently stop
    testing the fork path (a Dask cluster's offload thread once did this to five test modules)."""
    suite = Path(request.node.path).relative_to(Path(__file__).parent).parts[0]
    if suite in _ORCHESTRATOR_SUITES:
        yield
        return
    _wait_for_other_threads_to_idle()
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_EXIT_GRACE_SECONDS
    while left := [thread for thread in threading.enumerate() if thread not in before]:
        if time.monotonic() > deadline:
            names = ", ".join(sorted(thread.name for thread in left))
            pytest.fail(
                f"the test left {len(left)} thread(s) alive: {names}. Stop them, or run what "
                f"starts them in a subprocess.",
                pytrace=False,
            )
        time.sleep(0.01)


def _wait_for_other_threads_to_idle() -> None:
    """Start each core test with the process's native threads idle. OpenBLAS threads busy-wait
    for work 80 to 90 ms after they last ran, and a dry run in that window counts their CPU as
    the function's. The package waits for them before a dry run (blas_pools.settle), but tests
    also measure through `sample` directly, and settle gives up for good on a thread busy for
    half a second: what one test left running must not decide what the next one measures."""
    deadline = time.monotonic() + QUIET_WAIT_SECONDS
    while time.monotonic() < deadline:
        before = _native_threads_cpu_seconds()
        time.sleep(QUIET_WINDOW_SECONDS)
        if _native_threads_cpu_seconds() - before < QUIET_WINDOW_SECONDS / 10:
            return


def _native_threads_cpu_seconds() -> float:
    """CPU seconds of this process's native threads (Linux schedstat; 0 elsewhere). A core test
    starts with no other Python thread: the fixture fails one that leaves any."""
    from amorsize_flows.probes import blas_pools  # imported late: see AMORSIZE_CACHE_DIR above

    files = blas_pools.native_thread_files("schedstat") or {}
    return sum(int(text.split()[0]) for text in files.values() if text[:1].isdigit()) / 1e9


@pytest.fixture
def one_cpu_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A faked cgroup v2 tree whose quota gives this process one CPU of the two it may run on."""
    from amorsize_flows.measure import limits  # imported late: see AMORSIZE_CACHE_DIR above

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs in the affinity mask")
    root = tmp_path / "cgroup"
    (root / "pod").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory")
    (root / "pod" / "cpu.max").write_text("100000 100000")
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text("0::/pod\n")
    monkeypatch.setattr(limits, "PROC_ROOT", str(tmp_path / "proc"))
    monkeypatch.setattr(limits, "CGROUP_ROOT", str(root))
