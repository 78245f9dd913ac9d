"""A small digits ensemble on Airflow 3, every parallel stage planned by amorsize-flows: the
workload of the real-deployment tests and benchmark (the whole pipeline is retraining_pipeline.py).

Daily: load scikit-learn's digits and split them; extract features per image; cross-validate an
SVC hyperparameter grid; train an ensemble on bootstrap samples; run batch inference; evaluate;
save the model with its metrics. Each parallel stage is one task whose map is planned on the
worker that runs it (see the ``amorsize_plan`` XCom and the task log's plan table); from the
second run on, each stage starts from its previous run's record instead of a dry run.

The mapped functions live in ``amorsize_flows.examples.retraining``, an importable module, so
any start method works. Try it: ``airflow dags test digits_ensemble``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, task

from amorsize_flows.airflow import AmorsizeOperator
from amorsize_flows.examples import retraining

# Features of 1,347 training images are about 6 MB of JSON: expected, so no warning below 16 MB.
# A deployment keeps XComs this large in object storage (common-io's XCom backend; README).
FEATURES_XCOM_BYTES = 16 << 20


def _output_dir() -> Path:
    """Where models and metrics go: AMORSIZE_EXAMPLE_OUTPUT, else $AIRFLOW_HOME/retraining."""
    default = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "retraining"
    return Path(os.environ.get("AMORSIZE_EXAMPLE_OUTPUT", default))


@dag(
    dag_id="digits_ensemble",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["amorsize", "ml"],
    default_args={"retries": 1, "retry_delay": pendulum.duration(seconds=30)},
)
def digits_ensemble() -> None:
    @task
    def load() -> dict[str, Any]:
        return retraining.load_dataset(test_size=0.25, seed=0)

    @task.amorsize(max_xcom_bytes=FEATURES_XCOM_BYTES)
    def featurize(image: list[float]) -> list[float]:
        return retraining.extract_features(image)

    @task
    def best_params(scores: list[dict[str, Any]]) -> dict[str, float]:
        return retraining.select_best(scores)

    @task
    def member_specs(best: dict[str, float]) -> list[dict[str, Any]]:
        # (named `best`, not `params`: Airflow reserves that name for the DAG's params)
        return retraining.ensemble_specs(best, n_members=6, model_dir=str(_output_dir() / "models"))

    @task.amorsize
    def train_member(
        spec: dict[str, Any], features: list[list[float]], labels: list[int]
    ) -> dict[str, Any]:
        return retraining.train_member(spec, features=features, labels=labels)

    @task
    def batches(features: list[list[float]]) -> list[dict[str, Any]]:
        return retraining.make_batches(features, batch_size=25)

    @task
    def member_paths(members: list[dict[str, Any]]) -> list[str]:
        return [member["path"] for member in members]

    @task.amorsize
    def predict(batch: dict[str, Any], member_paths: list[str]) -> list[int]:
        return retraining.predict_batch(batch, member_paths=member_paths)

    @task
    def evaluate_and_save(
        data: dict[str, Any], predictions: list[list[int]], members: list[dict[str, Any]]
    ) -> dict[str, Any]:
        flat = [label for batch in predictions for label in batch]
        metrics = retraining.evaluate(data["test_labels"], flat)
        paths = retraining.save_model(members, metrics, str(_output_dir()))
        return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], **paths}

    data = load()
    train_features = featurize.override(task_id="featurize_train")(data["train_images"])
    test_features = featurize.override(task_id="featurize_test")(data["test_images"])
    grid = AmorsizeOperator(
        task_id="cv_grid",
        python_callable=retraining.cv_score,
        items=retraining.param_grid(),
        op_kwargs={"features": train_features, "labels": data["train_labels"], "folds": 3},
    )
    specs = member_specs(best_params(grid.output))
    members = train_member(specs, features=train_features, labels=data["train_labels"])
    predictions = predict(batches(test_features), member_paths=member_paths(members))
    evaluate_and_save(data, predictions, members)


digits_ensemble()
