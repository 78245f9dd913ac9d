"""The whole retraining pipeline flow on Prefect's embedded server: two daily runs, injected
drift, then a bad batch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
from prefect.variables import Variable

from amorsize_flows.prefect import variable_name

pytest.importorskip("mlflow")

REPO = Path(__file__).resolve().parents[2]
# Four families (the bar's least), one trial each, in one parallel batch: the flow's shape at a
# test's cost.
QUICK = {
    "families": ["logistic_regression", "random_forest", "gradient_boosting", "lightgbm"],
    "trials_per_family": 1,
    "trial_batch": 1,
}


def _flow_module():
    spec = importlib.util.spec_from_file_location(
        "retraining_pipeline_flow", REPO / "flows" / "retraining_pipeline.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_daily_runs_drift_and_a_bad_batch(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMORSIZE_PIPELINE_DATA", str(tmp_path))
    from amorsize_flows.examples.pipeline import ingest, registry

    module = _flow_module()
    first = module.retraining_pipeline(**QUICK)
    assert len(first["loaded"]["files"]) == 4
    assert first["registered"]["version"] == "1" and first["registered"]["champion"]
    assert first["registered"]["metrics"]["test_roc_auc"] > 0.95

    second = module.retraining_pipeline(**QUICK)
    assert second["loaded"]["files"] == ["digits-day04.csv"]  # only the day's new export
    record = Variable.get(variable_name("train_family", module.FLOW_NAME))["record"]
    assert record["source"] == "history"  # planned from the first run's record
    registered = second["registered"]
    assert registered["version"] == "2"
    better = registered["metrics"]["test_f1"] > first["registered"]["metrics"]["test_f1"]
    assert registered["champion"] == better, registered["why"]
    logged = registry.tracking(tmp_path).get_run(registered["run_id"]).data
    assert {"featurize.backend", "train_family.n_jobs", "cv_trial_batch1.chunksize"} <= set(
        logged.params
    )

    # The last day's export arrives brighter: the on-change policy retrains because of drift.
    ingest.write_day(tmp_path / "landing", 5, shift=4.0)
    drifted = module.retraining_pipeline(**QUICK, policy="on_change", receive=False)
    assert drifted["decision"]["drifted"], drifted["decision"]
    assert drifted["decision"]["retrain"]
    assert any(reason.startswith("drift") for reason in drifted["decision"]["reasons"])

    quiet = module.retraining_pipeline(**QUICK, policy="on_change", receive=False)
    assert not quiet["decision"]["retrain"] and quiet["registered"] is None  # nothing new

    bad = pd.read_csv(tmp_path / "landing" / "digits-day04.csv")
    bad.loc[[1, 6], "label"] = 42
    bad.to_csv(tmp_path / "landing" / "resent-bad.csv", index=False)
    with pytest.raises(ingest.BatchValidationError, match=r"rows \[1, 6\]"):
        module.retraining_pipeline(**QUICK, receive=False)
