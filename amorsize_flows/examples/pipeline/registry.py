"""MLflow on an embedded default: tracking and the model registry in a SQLite file under the
pipeline's data folder (no server). Every run logs its parameters, metrics, model and each
stage's plan and run record; the champion alias moves only to a better model, and the
previous champion stays one call away."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["champion_metric", "log_training", "rollback", "tracking"]

MODEL_NAME = "digits-classifier"
CHAMPION = "champion"
PREVIOUS = "previous-champion"
EXPERIMENT = "retraining-pipeline"
# Judged on the test split, which no step fitted or chose on.
CHAMPION_METRIC = "test_f1"

log = logging.getLogger(__name__)


def tracking(data_dir: str | Path) -> Any:
    """Point MLflow at the SQLite store in ``data_dir`` and return a client."""
    import mlflow
    from mlflow import MlflowClient

    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{directory / 'mlflow.db'}")
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(directory / "mlartifacts").as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return MlflowClient()


def champion_metric(client: Any) -> float | None:
    """The current champion's test F1, or None before the first one."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException:  # no registered model, or no champion yet
        return None
    return float(client.get_run(version.run_id).data.metrics[CHAMPION_METRIC])


def log_training(
    data_dir: str | Path,
    *,
    model: Any,
    params: dict[str, Any],
    metrics: dict[str, float],
    stages: dict[str, dict[str, Any]],
    reports: dict[str, Any],
) -> dict[str, Any]:
    """Log one training run and register its model; make it the champion only if it beats the
    current one on CHAMPION_METRIC. ``stages`` maps a stage name to its plan and record dicts.

    Returns the run id, the registered version, and whether (and why) it became the champion."""
    import mlflow
    import mlflow.sklearn

    client = tracking(data_dir)
    with mlflow.start_run() as run:
        mlflow.log_params({key: _short(value) for key, value in params.items()})
        mlflow.log_metrics(metrics)
        for stage, entry in stages.items():
            plan, record = entry.get("plan") or {}, entry.get("record") or {}
            mlflow.log_params(
                {
                    f"{stage}.backend": plan.get("backend"),
                    f"{stage}.n_jobs": plan.get("n_jobs"),
                    f"{stage}.chunksize": plan.get("chunksize"),
                }
            )
            mlflow.log_metrics(
                {
                    f"{stage}.estimated_speedup": float(plan.get("estimated_speedup", 1.0)),
                    f"{stage}.achieved_speedup": float(record.get("achieved_speedup", 0.0)),
                }
            )
            mlflow.log_text(json.dumps(entry, indent=2, default=str), f"amorsize/{stage}.json")
        for name, report in reports.items():
            mlflow.log_text(json.dumps(report, indent=2, default=str), f"reports/{name}.json")
        # cloudpickle: skops, MLflow's safe default, cannot load LightGBM models without a list
        # of trusted types; this store is the pipeline's own.
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=MODEL_NAME,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "lightgbm", "cloudpickle"],
        )
    version = str(info.registered_model_version)
    current = champion_metric(client)
    new = metrics[CHAMPION_METRIC]
    promoted = current is None or new > current
    if promoted:
        _promote(client, version)
    why = (
        "the first model"
        if current is None
        else f"{CHAMPION_METRIC} {new:.4f} {'>' if promoted else '<='} the champion's {current:.4f}"
    )
    log.info("model version %s %s: %s", version, "is the champion" if promoted else "kept", why)
    return {"run_id": run.info.run_id, "version": version, "champion": promoted, "why": why}


def rollback(data_dir: str | Path) -> str:
    """Make the previous champion the champion again; returns its version."""
    from mlflow.exceptions import MlflowException

    client = tracking(data_dir)
    try:
        previous = client.get_model_version_by_alias(MODEL_NAME, PREVIOUS)
    except MlflowException:
        raise LookupError("no previous champion to roll back to") from None
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, previous.version)
    client.delete_registered_model_alias(MODEL_NAME, PREVIOUS)
    return str(previous.version)


def _promote(client: Any, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException:
        current = None  # the first champion: nothing to keep for a rollback
    if current is not None:
        client.set_registered_model_alias(MODEL_NAME, PREVIOUS, current.version)
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)


def _short(value: Any) -> str:
    """MLflow keeps a parameter in at most 6000 characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]
