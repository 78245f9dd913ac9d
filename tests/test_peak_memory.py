"""Peak memory per call: measured in the dry run and in worker processes, planned within limits."""

from __future__ import annotations

import sys

import pytest

import amorsize_flows as amz
from amorsize_flows.measure.peak_memory import PeakMemory

MIB = 1 << 20
LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM")


def touch_300_mib(index: int) -> int:
    """Write 300 MiB, free it, keep nothing: a call whose memory shows only at its peak."""
    block = bytearray(300 * MIB)
    block[::4096] = b"x" * (len(block) // 4096)  # calloc'd pages count only once written
    return index


@LINUX_ONLY
def test_a_call_s_peak_is_seen_though_it_keeps_nothing() -> None:
    peak = PeakMemory()
    peak.start()
    touch_300_mib(0)
    peak.stop()
    assert 280 * MIB <= peak.bytes <= 340 * MIB


@LINUX_ONLY
def test_the_dry_run_counts_a_call_s_peak_as_what_it_needs() -> None:
    plan = amz.optimize(touch_300_mib, range(8))
    assert plan.profile["item_memory_bytes"] >= 280 * MIB


@LINUX_ONLY
def test_calls_that_do_not_fit_side_by_side_run_one_at_a_time() -> None:
    # Two calls at once would need 600 MiB: more than 80% of the limit.
    plan = amz.optimize(touch_300_mib, range(8), memory_limit="500M")
    assert plan.n_jobs == 1, plan.reason
    assert plan.backend == "serial", plan.reason


@LINUX_ONLY
def test_workers_report_their_peaks_and_the_next_run_learns_them() -> None:
    fixed = amz.Plan.fixed("processes", 2, 2)
    run = amz.run(touch_300_mib, range(6), plan=fixed)
    assert run.results == list(range(6))
    assert run.record.peak_memory_bytes >= 280 * MIB
    assert run.record.profile == {} or run.record.profile["item_memory_bytes"] >= 280 * MIB
    sampled = amz.run(touch_300_mib, range(6))
    nxt = amz.optimize(touch_300_mib, range(6), history=sampled.record, memory_limit="500M")
    assert nxt.source == "history"
    assert nxt.n_jobs == 1, nxt.reason
