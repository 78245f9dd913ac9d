"""Plans and run records: plain JSON round trips, validation of anything stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import amorsize_flows as amz
from amorsize_flows.data.plan import Candidate


def _plan() -> amz.Plan:
    return amz.Plan(
        backend="processes",
        n_jobs=2,
        chunksize=16,
        estimated_speedup=1.8,
        reason="Processes x2: CPU-bound.",
        start_method="fork",
        n_items=1000,
        function="mod:f",
        function_digest="abc",
        source="sampled",
        limits={"cpus": 2, "cpus_source": "CPU affinity"},
        profile={"seconds_per_item": 0.005},
        candidates=(Candidate("serial", 1, 1000, 5.0), Candidate("processes", 2, 16, 2.7, "fork")),
    )


def test_plan_round_trips_through_json() -> None:
    plan = _plan()
    data = json.loads(json.dumps(plan.to_dict()))
    assert amz.Plan.from_dict(data) == plan
    for key in ("backend", "n_jobs", "chunksize", "estimated_speedup", "reason"):
        assert key in data


def test_record_round_trips_through_json() -> None:
    record = amz.RunRecord(
        "mod:f",
        "abc",
        10,
        "threads",
        4,
        1,
        wall_seconds=0.1,
        seconds_per_item=0.01,
        achieved_speedup=3.0,
    )
    assert amz.RunRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_save_and_load_config(tmp_path: Path) -> None:
    path = amz.save_config(_plan(), tmp_path / "nested" / "plan.json")
    loaded = amz.load_config(path)
    assert loaded.source == "stored"
    assert (loaded.backend, loaded.n_jobs, loaded.chunksize) == ("processes", 2, 16)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backend": "gpu"}, "backend"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"n_jobs": 10**9}, "n_jobs"),
        ({"schema_version": 99}, "schema_version 99"),
        ({"reason": "x" * 5000}, "reason"),
        ({"__reduce__": "os.system"}, "Additional properties"),
        ({"candidates": [{"backend": "serial"}]}, "candidates"),
    ],
)
def test_malformed_or_hostile_plans_are_rejected(change: dict, message: str) -> None:
    data = {**_plan().to_dict(), **change}
    with pytest.raises(amz.InvalidPlanError, match=message):
        amz.Plan.from_dict(data)


def test_inconsistent_plan_is_rejected() -> None:
    data = {**_plan().to_dict(), "backend": "serial", "start_method": None}
    with pytest.raises(amz.InvalidPlanError, match="serial plan runs one job"):
        amz.Plan.from_dict(data)


def test_not_a_dict_and_not_json(tmp_path: Path) -> None:
    with pytest.raises(amz.InvalidPlanError, match="must be a JSON object"):
        amz.Plan.from_dict([1, 2])  # type: ignore[arg-type]
    bad = tmp_path / "plan.json"
    bad.write_bytes(b"\x80\x04pickle?")
    with pytest.raises(amz.InvalidPlanError, match="not JSON"):
        amz.load_config(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "cuda", "n_jobs": 1, "chunksize": 1}, "`backend` must be one of"),
        (
            {"backend": "threads", "n_jobs": 0, "chunksize": 1},
            "`n_jobs` must be an int >= 1, got 0",
        ),
        ({"backend": "threads", "n_jobs": 2, "chunksize": 1.5}, "`chunksize` must be an int"),
        (
            {"backend": "threads", "n_jobs": 2, "chunksize": 1, "start_method": "fork"},
            "processes only",
        ),
    ],
)
def test_plan_arguments_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        amz.Plan(**kwargs)


def test_save_config_checks_its_argument(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"`plan` must be an amorsize_flows\.Plan"):
        amz.save_config({"backend": "serial"}, tmp_path / "p.json")  # type: ignore[arg-type]
