"""The run record: what a map really cost, as the next run's evidence."""

from __future__ import annotations

from dataclasses import replace

import pytest

from amorsize_flows.data.plan import Candidate, Plan
from amorsize_flows.measure.limits import WorkerLimits
from amorsize_flows.measure.record import UNMODELLED_FADE, build_record
from amorsize_flows.measure.run_stats import RunStats

LIMITS = WorkerLimits(2, "CPU affinity", 1 << 34, "test")


def _stats(map_seconds: float, items: int = 18) -> RunStats:
    stats = RunStats(started_at=100.0)
    stats.add_chunk(
        items, compute_seconds=items * 0.012, cpu_seconds=items * 0.012, queued_seconds=0
    )
    stats.finished_at = 100.0 + map_seconds
    return stats


def _processes_plan(predicted: float, unmodelled: float = 0.0) -> Plan:
    return Plan(
        "processes",
        2,
        1,
        start_method="fork",
        candidates=(
            Candidate("processes", 2, 1, predicted, "fork"),
            Candidate("serial", 1, 18, 0.216),
        ),
        unmodelled_process_seconds=unmodelled,
    )


def test_a_process_map_slower_than_predicted_records_the_excess() -> None:
    record = build_record(
        _processes_plan(0.13), None, LIMITS, _stats(0.31), wall=0.31, sampled=0, sample_seconds=0
    )
    assert record.unmodelled_process_seconds == pytest.approx(0.18)
    assert type(record).from_dict(record.to_dict()) == record


def test_the_excess_already_counted_is_not_counted_twice() -> None:
    # Predicted 0.33 s, of which 0.2 s was last run's excess; the map took 0.25 s: 0.12 s now.
    plan = _processes_plan(0.33, unmodelled=0.2)
    record = build_record(plan, None, LIMITS, _stats(0.25), wall=0.25, sampled=0, sample_seconds=0)
    assert record.unmodelled_process_seconds == pytest.approx(0.12)
    faster = build_record(plan, None, LIMITS, _stats(0.05), wall=0.05, sampled=0, sample_seconds=0)
    assert faster.unmodelled_process_seconds == 0.0


def test_a_serial_run_keeps_the_lesson_of_the_process_run_before_it_fading() -> None:
    # Else the run after it would plan processes again from the same blind model, and lose again;
    # faded, so that one noisy run does not keep the stage serial for good.
    plan = replace(Plan("serial", 1, 1), unmodelled_process_seconds=0.18)
    record = build_record(plan, None, LIMITS, _stats(0.22), wall=0.22, sampled=0, sample_seconds=0)
    assert record.unmodelled_process_seconds == pytest.approx(0.18 * UNMODELLED_FADE)


def test_a_plan_not_priced_as_it_ran_teaches_nothing_new() -> None:
    # Lowered to fewer workers than the model priced (a smaller node): no candidate to compare.
    plan = replace(_processes_plan(0.13, unmodelled=0.05), n_jobs=1)
    record = build_record(plan, None, LIMITS, _stats(0.5), wall=0.5, sampled=0, sample_seconds=0)
    assert record.unmodelled_process_seconds == pytest.approx(0.05 * UNMODELLED_FADE)
