"""One Prefect API for the whole Prefect suite: a session-scoped ``prefect_test_harness``.

Prefect reads its home and settings when it is first imported, so they are set here, before any
test module imports it. Airflow is never imported in this suite (it runs in its own pytest process).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

# A private Prefect home: a test never reads or writes the developer's profiles or database.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="amorsize-prefect-home-")
# The harness server's telemetry write races its own start-up ("database is locked"): harmless noise.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

try:
    import prefect  # noqa: F401
except ImportError:  # the Prefect extra is not installed: nothing here can run
    collect_ignore_glob = ["*.py"]

# Starting the server takes 11 to 18 s on a 2-core machine; Prefect's default 30 s is flaky.
SERVER_STARTUP_TIMEOUT = 120


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A temporary Prefect server on a fresh SQLite database; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=SERVER_STARTUP_TIMEOUT):
        url = PREFECT_API_URL.value()
        assert url, "the harness did not set PREFECT_API_URL"
        yield url


@pytest.fixture
def subprocess_env(prefect_api: str) -> dict[str, str]:
    """The environment a Prefect subprocess needs to reach the test API and import the tests."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=prefect_api,
        PYTHONPATH=os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")])),
    )
    return env
