"""The retraining pipeline's stages on real data (scikit-learn's digits), without an orchestrator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pandera")

from amorsize_flows.examples.pipeline import (
    drift,
    evaluation,
    features,
    ingest,
    models,
    registry,
    stages,
)


def _landed(root: Path, days: range) -> None:
    for day in days:
        ingest.write_day(root / "landing", day)


def test_each_run_loads_only_new_files_and_drops_rows_seen_before(tmp_path: Path) -> None:
    _landed(tmp_path, range(2))
    first = stages.ingest_new(str(tmp_path))
    assert first["files"] == ["digits-day00.csv", "digits-day01.parquet"]
    assert first["duplicates_dropped"] == ingest.REPEATED_ROWS  # day 1 re-sends day 0's tail
    again = stages.ingest_new(str(tmp_path))
    assert again["files"] == [] and again["new_rows"] == 0
    _landed(tmp_path, range(2, 3))
    second = stages.ingest_new(str(tmp_path))
    assert second["files"] == ["digits-day02.csv"]
    assert second["new_rows"] == second["rows_received"] - ingest.REPEATED_ROWS
    store = ingest.read_store(tmp_path / "store")
    assert store["row_id"].is_unique and len(store) == second["rows_in_store"]
    assert sorted(store["batch"].unique()) == [0, 1]


def test_a_bad_batch_fails_with_a_report_naming_its_rows_and_loads_nothing(tmp_path: Path) -> None:
    _landed(tmp_path, range(1))
    frame = pd.read_csv(tmp_path / "landing" / "digits-day00.csv")
    frame.loc[3, "p10"] = 99.0
    frame.loc[8, "label"] = 12
    frame.to_csv(tmp_path / "landing" / "export-bad.csv", index=False)
    with pytest.raises(ingest.BatchValidationError, match=r"rows \[3, 8\]") as failure:
        stages.ingest_new(str(tmp_path))
    assert {(entry["row"], entry["column"]) for entry in failure.value.report} == {
        (3, "p10"),
        (8, "label"),
    }
    assert len(ingest.read_store(tmp_path / "store")) == 0


def test_features_are_computed_once_per_row_and_version(tmp_path: Path) -> None:
    _landed(tmp_path, range(1))
    stages.ingest_new(str(tmp_path))
    todo = stages.rows_to_featurize(str(tmp_path))
    assert todo["version"] == features.VERSION and len(todo["row_ids"]) > 250
    computed = [features.featurize_row(pixels) for pixels in todo["pixels"]]
    stages.save_features(str(tmp_path), todo["row_ids"], computed)
    assert stages.rows_to_featurize(str(tmp_path))["row_ids"] == []
    store = ingest.read_store(tmp_path / "store")
    assert features.features_for(store, tmp_path / "store").shape == (len(store), len(computed[0]))


def test_the_split_is_stratified_70_15_15() -> None:
    labels = [index % 10 for index in range(1000)]
    parts = evaluation.split_indices(labels)
    assert [len(parts[name]) for name in ("train", "validation", "test")] == [700, 150, 150]
    assert set().union(*map(set, parts.values())) == set(range(1000))
    for rows in parts.values():
        assert set(np.bincount(np.asarray(labels)[rows])) <= {14, 15, 16, 70}


def test_metrics_of_perfect_and_of_uninformed_classifiers() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    perfect = evaluation.classification_metrics(y, np.eye(3)[y], [0, 1, 2])
    assert perfect == {name: 1.0 for name in perfect}
    assert set(perfect) == {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc"}
    flat = evaluation.classification_metrics(y, np.full((6, 3), 1 / 3), [0, 1, 2])
    assert flat["roc_auc"] == 0.5
    regression = evaluation.regression_metrics([1.0, 2.0, 4.0], [1.0, 2.0, 2.0])
    assert regression["mse"] == pytest.approx(4 / 3) and regression["rmse"] == pytest.approx(
        (4 / 3) ** 0.5
    )
    assert regression["mae"] == pytest.approx(2 / 3) and regression["mape"] == pytest.approx(1 / 6)
    assert set(regression) == {"mse", "rmse", "mae", "r2", "mape"}


def test_drift_is_found_in_shifted_rows_and_not_in_fresh_rows_of_the_same_source(
    tmp_path: Path,
) -> None:
    reference = pd.concat(
        [pd.read_csv(ingest.write_day(tmp_path, day, fmt="csv")) for day in (0, 1)]
    )
    same = pd.read_csv(ingest.write_day(tmp_path, 2, fmt="csv"))
    shifted = pd.read_csv(ingest.write_day(tmp_path / "shifted", 2, fmt="csv", shift=3.0))
    pixels = ingest.PIXELS
    calm = drift.drift_report(reference[pixels].to_numpy(), same[pixels].to_numpy(), pixels)
    moved = drift.drift_report(reference[pixels].to_numpy(), shifted[pixels].to_numpy(), pixels)
    assert not calm["drifted"], calm["why"]
    assert moved["drifted"], moved["why"]
    assert len(moved["drifted_features"]) > len(calm["drifted_features"])


def test_tuning_asks_trials_in_batches_and_tells_their_scores() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] > 0).astype(int)
    batches: list[int] = []

    def run_map(func, specs):
        batches.append(len(specs))
        return [func(spec, features=x, labels=y) for spec in specs]

    best = models.tune(["logistic_regression"], run_map, trials_per_family=3, batch_size=2)
    assert batches == [2, 1]
    assert best["logistic_regression"]["trials"] == 3
    assert best["logistic_regression"]["cv_f1"] > 0.9
    with pytest.raises(ValueError, match="`families` must be some of"):
        models.tune(["svm"], run_map, trials_per_family=1, batch_size=1)


def test_a_worse_model_is_registered_but_not_champion_and_rollback_restores(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0], [1]], [0, 1])

    def log(f1: float) -> dict:
        metrics = {registry.CHAMPION_METRIC: f1}
        stage = {"featurize": {"plan": {"backend": "processes", "n_jobs": 2}, "record": {}}}
        return registry.log_training(
            tmp_path, model=model, params={"p": 1}, metrics=metrics, stages=stage, reports={}
        )

    first, worse, better = log(0.90), log(0.80), log(0.95)
    assert (first["champion"], worse["champion"], better["champion"]) == (True, False, True)
    assert "0.8000 <= the champion's 0.9000" in worse["why"]
    client = registry.tracking(tmp_path)
    assert registry.champion_metric(client) == 0.95
    assert registry.rollback(tmp_path) == first["version"]
    assert registry.champion_metric(client) == 0.90
    run = client.get_run(better["run_id"])
    assert run.data.params["featurize.backend"] == "processes"
    assert (
        json.loads(
            Path(
                run.info.artifact_uri.removeprefix("file://"), "amorsize", "featurize.json"
            ).read_text()
        )["plan"]["n_jobs"]
        == 2
    )


def test_the_export_brings_four_days_first_then_one_a_run_until_the_last(tmp_path: Path) -> None:
    arrivals = [len(stages.receive_export(str(tmp_path))) for _ in range(ingest.DAYS)]
    assert arrivals == [4] + [1] * (ingest.DAYS - 4) + [0] * 3
