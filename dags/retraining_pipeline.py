"""The scheduled retraining pipeline on Airflow 3, its parallel stages planned by amorsize-flows.

Daily: receive the day's export (digits batches, CSV and Parquet), load only the new files,
checked and deduplicated; featurize the new rows (a versioned transformation); measure drift and
decide to retrain (short-circuit otherwise); split 70/15/15; tune five model families by Optuna,
trials 5-fold cross-validated in parallel batches; fit each family's best; vote and stack;
measure the full metric set; log everything to MLflow (a SQLite store under the data folder) and
register the model, the champion only if it beats the current one on the test split.

``featurize`` and ``train_family`` are ``@task.amorsize`` stages: their plans are the XComs
``amorsize_plan`` and ``amorsize_run``, and the MLflow run's ``amorsize/<stage>.json``. The
stage functions live in ``amorsize_flows.examples.pipeline`` (importable by any worker).
Try it: ``airflow dags test retraining_pipeline``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from amorsize_flows.examples.pipeline import features, stages

# The new rows' features are a few MB of JSON on the first run: expected.
FEATURES_XCOM_BYTES = 16 << 20


def data_dir() -> str:
    """AMORSIZE_PIPELINE_DATA, else $AIRFLOW_HOME/retraining-pipeline."""
    home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
    return os.environ.get("AMORSIZE_PIPELINE_DATA", str(home / "retraining-pipeline"))


@dag(
    dag_id="retraining_pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # a run reads what the one before it loaded and registered
    tags=["amorsize", "ml"],
    default_args={"retries": 1, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "families": Param(stages.DEFAULT_FAMILIES, type="array"),
        "trials_per_family": Param(4, type="integer", minimum=1),
        "trial_batch": Param(2, type="integer", minimum=1),
        "policy": Param("scheduled", enum=["scheduled", "on_change"]),
        "receive": Param(True, type="boolean"),
    },
)
def retraining_pipeline() -> None:
    @task
    def receive_export(params: dict[str, Any]) -> list[str]:
        return stages.receive_export(data_dir()) if params["receive"] else []

    @task
    def load_new(received: list[str]) -> dict[str, Any]:
        return stages.ingest_new(data_dir())

    @task
    def rows_to_featurize(summary: dict[str, Any]) -> dict[str, Any]:
        return stages.rows_to_featurize(data_dir())

    @task.amorsize(max_xcom_bytes=FEATURES_XCOM_BYTES)
    def featurize(pixels: list[float]) -> list[float]:
        return features.featurize_row(pixels)

    @task
    def save_features(todo: dict[str, Any], computed: list[list[float]]) -> int:
        return stages.save_features(data_dir(), todo["row_ids"], computed)

    @task
    def check_drift(summary: dict[str, Any], saved: int, params: dict[str, Any]) -> dict[str, Any]:
        return stages.check_drift(data_dir(), summary, params["policy"])

    @task.short_circuit
    def should_retrain(decision: dict[str, Any]) -> bool:
        print(f"retrain: {decision['retrain']} ({'; '.join(decision['reasons'])})")
        return decision["retrain"]

    @task
    def tune(params: dict[str, Any]) -> dict[str, Any]:
        return stages.tune_families(
            data_dir(), params["families"], params["trials_per_family"], params["trial_batch"]
        )

    @task
    def family_specs(tuned: dict[str, Any]) -> list[dict[str, Any]]:
        return stages.family_specs(data_dir(), tuned["best"])

    @task.amorsize
    def train_family(spec: dict[str, Any]) -> dict[str, Any]:
        return stages.train_family(spec, data_dir())

    @task
    def evaluate_and_register(
        fitted: list[dict[str, Any]],
        tuned: dict[str, Any],
        summary: dict[str, Any],
        decision: dict[str, Any],
    ) -> dict[str, Any]:
        ti = get_current_context()["ti"]
        entries = {
            stage: {
                "plan": ti.xcom_pull(task_ids=stage, key="amorsize_plan"),
                "record": ti.xcom_pull(task_ids=stage, key="amorsize_run"),
            }
            for stage in ("featurize", "train_family")
        }
        entries |= {f"cv_trial_batch{n}": batch for n, batch in enumerate(tuned["batches"], 1)}
        reports = {"ingest": summary, "drift": decision, "tuning": tuned["best"]}
        registered = stages.evaluate_and_register(data_dir(), fitted, entries, reports)
        print(
            f"model version {registered['version']} ({registered['model']}): "
            f"{'champion' if registered['champion'] else 'not promoted'}, {registered['why']}"
        )
        return registered

    summary = load_new(receive_export())
    todo = rows_to_featurize(summary)
    saved = save_features(todo, featurize(todo["pixels"]))
    decision = check_drift(summary, saved)
    tuned = tune()
    should_retrain(decision) >> tuned
    fitted = train_family(family_specs(tuned))
    evaluate_and_register(fitted, tuned, summary, decision)


retraining_pipeline()
