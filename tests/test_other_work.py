"""CPUs other processes keep busy are not free: a dry run reads how many, and the plan counts
them (probes/other_work.py, measure/limits.less_other_work)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import amorsize_flows as amz
from amorsize_flows.measure.limits import WorkerLimits, less_other_work
from amorsize_flows.probes.other_work import OtherWork
from tests.markers import SCHEDULING
from tests.workloads import busy

NODE = os.cpu_count() or 1
TWO_CPUS = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or len(os.sched_getaffinity(0)) != NODE,
    reason="needs two CPUs, all of the node's",
)


@pytest.fixture
def a_cpu_kept_busy() -> Iterator[None]:
    """Another process spinning on a CPU for the whole test."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)  # running, not starting
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def _limits(cpus: int, quota: float | None = None) -> WorkerLimits:
    return WorkerLimits(cpus, "CPU affinity", 1 << 30, "physical memory", cpu_quota=quota)


def test_the_cpus_others_keep_busy_come_off_the_node_s() -> None:
    limits = less_other_work(_limits(NODE), NODE - 0.9)
    assert limits.cpus == 1
    assert "kept busy by other processes" in limits.cpus_source


@pytest.mark.parametrize("busy_cpus", [None, 0.3])
def test_little_or_unknown_other_work_changes_nothing(busy_cpus: float | None) -> None:
    assert less_other_work(_limits(NODE), busy_cpus) == _limits(NODE)


def test_a_quota_is_not_shared_with_the_node_s_other_work() -> None:
    # Under a cgroup quota the node's other processes run outside it: they take none of it.
    assert less_other_work(_limits(1, quota=1.5), NODE - 0.5) == _limits(1, quota=1.5)


@SCHEDULING
@TWO_CPUS
def test_a_spinning_process_reads_as_a_busy_cpu(a_cpu_kept_busy: None) -> None:
    others = OtherWork()
    busy(0.2)
    busy_cpus = others.busy_cpus(0.05)
    assert busy_cpus is not None and 0.7 < busy_cpus < 1.5, busy_cpus


def test_too_short_a_stretch_tells_nothing() -> None:
    assert OtherWork().busy_cpus(min_seconds=10.0) is None


@SCHEDULING
@TWO_CPUS
def test_a_map_beside_a_process_spinning_on_a_cpu_plans_for_the_other(
    a_cpu_kept_busy: None,
) -> None:
    plan = amz.optimize(busy, [0.05] * 60)  # a dry run of about 0.1 s: long enough to read
    assert plan.limits["cpus"] == NODE - 1, plan.limits
    assert "kept busy by other processes" in plan.limits["cpus_source"], plan.limits
