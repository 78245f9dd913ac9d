"""The pipeline's steps as the Airflow DAG and the Prefect flow call them: each takes the data
folder and small JSON values and returns small JSON values; the data stays in files.

The parallel stages map one function over items: ``featurize_row`` over new rows,
``models.cv_trial`` over each batch of Optuna trials, ``train_family`` over the model families.
The orchestrator's wrapper plans the first and the last (``@task.amorsize``, ``@amorsize_task``);
the trials, asked batch after batch inside one task, are planned here with ``amorsize_flows.run``,
each batch from the previous one's record, the first from the last run's.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

import amorsize_flows as amz

from . import drift, ensembles, evaluation, features, ingest, models, registry

__all__ = [
    "DEFAULT_FAMILIES",
    "check_drift",
    "evaluate_and_register",
    "family_specs",
    "ingest_new",
    "receive_export",
    "rows_to_featurize",
    "save_features",
    "train_family",
    "tune_families",
]

DEFAULT_FAMILIES = ["logistic_regression", "random_forest", "gradient_boosting", "mlp", "lightgbm"]
DEGRADED_F1 = 0.02  # the champion's F1 on new rows this far under its test F1: retrain
SPLIT_SEED = 0


def receive_export(data_dir: str, first_days: int = 4) -> list[str]:
    """Stand-in for the upstream export: the next day's batch file lands in ``data_dir/landing``
    (on the first run, ``first_days`` of them); returns the files written."""
    landing = Path(data_dir) / "landing"
    present = len(list(landing.glob("digits-day*"))) if landing.exists() else 0
    days = range(present, min(ingest.DAYS, max(first_days, present + 1)))
    return [ingest.write_day(landing, day).name for day in days]


def ingest_new(data_dir: str) -> dict[str, Any]:
    """Load the new batch files of ``data_dir/landing`` (see ``ingest.load_new_batches``)."""
    root = Path(data_dir)
    summary = ingest.load_new_batches(root / "landing", root / "store")
    return {key: value for key, value in summary.items() if key != "new_row_ids"} | {
        "new_rows": len(summary["new_row_ids"])
    }


def check_drift(
    data_dir: str, summary: dict[str, Any], policy: str = "scheduled"
) -> dict[str, Any]:
    """Drift of the newest load against the rows before it, and whether to retrain.

    ``policy="scheduled"`` retrains whenever new rows came (the daily schedule);
    ``"on_change"`` only when the new rows drifted or the champion's F1 on them fell."""
    if policy not in ("scheduled", "on_change"):
        raise ValueError(f"`policy` must be 'scheduled' or 'on_change', got {policy!r}")
    root = Path(data_dir)
    store = ingest.read_store(root / "store")
    newest = store["batch"].max() if len(store) else 0
    reference, current = store[store["batch"] < newest], store[store["batch"] == newest]
    report = (
        drift.drift_report(
            reference[ingest.PIXELS].to_numpy(float),
            current[ingest.PIXELS].to_numpy(float),
            ingest.PIXELS,
        )
        if len(reference)
        else {"drifted": False, "why": "the first load: nothing to compare", "features": {}}
    )
    champion = registry.champion_metric(registry.tracking(root))
    reasons = []
    if summary["new_rows"] == 0:
        retrain, reasons = False, ["no new rows"]
    else:
        if champion is None:
            reasons.append("no champion yet")
        if report["drifted"]:
            reasons.append(f"drift: {report['why']}")
        fell = _champion_fell(root, current, champion)
        if fell:
            reasons.append(fell)
        if policy == "scheduled":
            reasons.append("scheduled retraining on new rows")
        retrain = bool(reasons)
    report_path = root / "reports" / "drift.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    return {
        "retrain": retrain,
        "reasons": reasons or ["no drift, and the champion holds up on the new rows"],
        "drifted": report["drifted"],
        "drift_summary": report["why"],
        "report": str(report_path),
    }


def rows_to_featurize(data_dir: str) -> dict[str, Any]:
    """The rows without features of this version: their ids and pixels (the mapped items)."""
    store_dir = Path(data_dir) / "store"
    row_ids, pixels = features.rows_to_featurize(ingest.read_store(store_dir), store_dir)
    return {"row_ids": row_ids, "pixels": pixels, "version": features.VERSION}


def save_features(data_dir: str, row_ids: list[str], computed: list[list[float]]) -> int:
    return features.save_features(Path(data_dir) / "store", row_ids, computed)


def _splits(data_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The store's features and labels, split 70/15/15."""
    store_dir = Path(data_dir) / "store"
    stamps = tuple(path.stat().st_mtime_ns for path in sorted(store_dir.glob("*.parquet")))
    return _splits_of(str(store_dir), stamps)


@functools.cache
def _splits_of(store: str, stamps: tuple[int, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read once per process and version of the files: a worker reuses them for every item."""
    store_dir = Path(store)
    store = ingest.read_store(store_dir)
    x, y = features.features_for(store, store_dir), store["label"].to_numpy(int)
    parts = evaluation.split_indices(y.tolist(), seed=SPLIT_SEED)
    return {name: (x[rows], y[rows]) for name, rows in parts.items()}


def tune_families(
    data_dir: str,
    families: list[str] | None = None,
    trials_per_family: int = 4,
    batch_size: int = 2,
) -> dict[str, Any]:
    """Optuna's search for each family, trials 5-fold cross-validated in parallel batches."""
    x, y = _splits(data_dir)["train"]
    record_path = Path(data_dir) / "amorsize" / "cv_trial.json"
    runs: list[dict[str, Any]] = []

    def run_map(func: Any, specs: list[Any]) -> list[Any]:
        history = json.loads(record_path.read_text()) if record_path.exists() else None
        outcome = amz.run(functools.partial(func, features=x, labels=y), specs, history=history)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(outcome.record.to_dict()))
        runs.append({"plan": outcome.plan.to_dict(), "record": outcome.record.to_dict()})
        return outcome.results

    best = models.tune(
        families or DEFAULT_FAMILIES,
        run_map,
        trials_per_family=trials_per_family,
        batch_size=batch_size,
    )
    return {"best": best, "batches": runs}


def family_specs(data_dir: str, best: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One item per family for ``train_family``: its best parameters and where its model goes."""
    folder = Path(data_dir) / "models"
    return [
        {"family": name, "params": entry["params"], "path": str(folder / f"{name}.pkl")}
        for name, entry in best.items()
    ]


def train_family(spec: dict[str, Any], data_dir: str) -> dict[str, Any]:
    """Fit one family on the training split and save it (``ensembles.fit_family``)."""
    x, y = _splits(data_dir)["train"]
    return ensembles.fit_family(spec, features=x, labels=y)


def evaluate_and_register(
    data_dir: str,
    fitted: list[dict[str, Any]],
    stages: dict[str, dict[str, Any]],
    reports: dict[str, Any],
) -> dict[str, Any]:
    """Voting and stacking beside each family; the best on validation F1 is measured on the
    test split and registered in MLflow, and becomes the champion only if better."""
    parts = _splits(data_dir)
    scored = ensembles.candidates(fitted, *parts["validation"])
    chosen = max(scored, key=lambda name: scored[name][1]["f1"])
    model = scored[chosen][0]
    x_test, y_test = parts["test"]
    test = evaluation.classification_metrics(y_test, model.predict_proba(x_test), model.classes_)
    metrics = {f"validation_{key}": value for key, value in scored[chosen][1].items()}
    metrics |= {f"test_{key}": value for key, value in test.items()}
    metrics |= {f"{name}.validation_f1": entry[1]["f1"] for name, entry in scored.items()}
    params = {
        "model": chosen,
        "features_version": features.VERSION,
        "rows": {name: len(part[1]) for name, part in parts.items()},
        "families": [spec["family"] for spec in fitted],
    } | {f"{spec['family']}.params": spec["params"] for spec in fitted}
    registered = registry.log_training(
        data_dir, model=model, params=params, metrics=metrics, stages=stages, reports=reports
    )
    return {"model": chosen, "metrics": metrics, **registered}


def _champion_fell(root: Path, current: Any, champion: float | None) -> str | None:
    """Why the champion no longer holds up on the new rows, if it does not."""
    if champion is None or not len(current):
        return None
    import mlflow.sklearn  # only once a champion exists
    from sklearn.metrics import f1_score

    try:
        x = features.features_for(current, root / "store")
    except LookupError:
        return None  # the new rows are not featurized yet: judged after training instead
    model = mlflow.sklearn.load_model(f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}")
    f1 = float(f1_score(current["label"], model.predict(x), average="macro"))
    if f1 < champion - DEGRADED_F1:
        return f"the champion's F1 on the new rows is {f1:.3f}, under its test F1 {champion:.3f}"
    return None
