"""The whole retraining pipeline DAG in dag.test(): two daily runs, then a bad batch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import amorsize_flows as amz

pytest.importorskip("mlflow")

# Four families (the bar's least), one trial each, in one parallel batch: the DAG's shape at a
# test's cost.
QUICK = {
    "families": ["logistic_regression", "random_forest", "gradient_boosting", "lightgbm"],
    "trials_per_family": 1,
    "trial_batch": 1,
}


def test_two_daily_runs_then_a_bad_batch(dagbag, xcoms, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AMORSIZE_PIPELINE_DATA", str(tmp_path))
    from amorsize_flows.examples.pipeline import registry

    dag = dagbag.get_dag("retraining_pipeline")
    assert dag.timetable.expression in ("@daily", "0 0 * * *")

    first = dag.test(run_conf=QUICK)
    assert first.state == "success"
    pushed = xcoms(first)
    loaded = pushed[("load_new", "return_value")]
    assert len(loaded["files"]) == 4 and loaded["duplicates_dropped"] > 0
    for stage in ("featurize", "train_family"):
        assert amz.Plan.from_dict(pushed[(stage, "amorsize_plan")]).source == "sampled"
    registered = pushed[("evaluate_and_register", "return_value")]
    assert registered["version"] == "1" and registered["champion"]
    assert set(registered["metrics"]) >= {
        f"test_{name}" for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")
    }
    assert registered["metrics"]["test_f1"] > 0.9

    second = dag.test(run_conf=QUICK)
    assert second.state == "success"
    pushed = xcoms(second)
    loaded = pushed[("load_new", "return_value")]
    assert loaded["files"] == ["digits-day04.csv"]  # only the day's new export
    assert 0 < loaded["new_rows"] < 320
    assert amz.Plan.from_dict(pushed[("train_family", "amorsize_plan")]).source == "history"
    again = pushed[("evaluate_and_register", "return_value")]
    assert again["version"] == "2"
    previous_f1 = registered["metrics"]["test_f1"]
    assert again["champion"] == (again["metrics"]["test_f1"] > previous_f1), again["why"]
    client = registry.tracking(tmp_path)
    champion = client.get_model_version_by_alias(registry.MODEL_NAME, registry.CHAMPION)
    assert str(champion.version) == ("2" if again["champion"] else "1")
    logged = client.get_run(again["run_id"]).data
    assert logged.params["train_family.backend"] in ("serial", "threads", "processes")
    assert "featurize.estimated_speedup" in logged.metrics

    day = pd.read_csv(tmp_path / "landing" / "digits-day04.csv")
    day.loc[2, "p5"] = -4.0
    day.to_csv(tmp_path / "landing" / "resent-bad.csv", index=False)
    failed = dag.test(run_conf={**QUICK, "receive": False})
    assert failed.state == "failed"
    states = {ti.task_id: ti.state for ti in failed.get_task_instances()}
    assert states["load_new"] == "failed" and states["evaluate_and_register"] != "success"
