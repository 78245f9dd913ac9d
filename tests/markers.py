"""Markers shared by the test modules."""

from __future__ import annotations

import pytest

# Tests of how Linux schedules threads and counts their CPU. The host of a small VM takes its CPUs
# away in bursts that the guest cannot see (its run queues look free, so the GIL probe's
# crowding check passes), and during one, such tests fail together: four in one fresh-clone CI
# run here, each of which passed in the five full runs around it. They run again, up to three
# times, after a pause of a few seconds (in one CI run a test failed three tries two seconds
# apart); a real fault fails every time. A failure's report says how much CPU the host took
# away meanwhile (conftest.py).
SCHEDULING = pytest.mark.flaky(reruns=3, reruns_delay=5)
