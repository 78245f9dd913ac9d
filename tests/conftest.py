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

# Set before amorsize_flows is imported anywhere: the calibration cache is read lazily, but a
# test session must neither read nor write the developer's own cache.
os.environ.setdefault("AMORSIZE_CACHE_DIR", tempfile.mkdtemp(prefix="amorsize-test-cache-"))

# The orchestrators keep threads of their own for the whole session (Prefect's API client and
# event loop, Airflow's log handlers): their suites are not held to this.
_ORCHESTRATOR_SUITES = ("airflow", "prefect")
# Pools join their threads on shutdown; loky's manager thread can take a moment after that.
THREAD_EXIT_GRACE_SECONDS = 2.0


@pytest.fixture(autouse=True)
def no_thread_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a core test that leaves a thread alive. While a second thread runs, forking is unsafe
    and every later map starts fresh interpreters instead: the tests after it would silently stop
    testing the fork path (a Dask cluster's offload thread once did this to five test modules)."""
    suite = Path(request.node.path).relative_to(Path(__file__).parent).parts[0]
    if suite in _ORCHESTRATOR_SUITES:
        yield
        return
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
