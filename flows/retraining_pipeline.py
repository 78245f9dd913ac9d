"""The scheduled retraining pipeline on Prefect 3, its parallel stages planned by amorsize-flows.

Daily: receive the day's export (digits batches, CSV and Parquet), load only the new files,
checked and deduplicated; featurize the new rows (a versioned transformation); measure drift
and decide to retrain; split 70/15/15; tune five model families by Optuna, trials 5-fold
cross-validated in parallel batches; fit each family's best; vote and stack; measure the full
metric set; log everything to MLflow (a SQLite store under the data folder) and register the
model, the champion only if it beats the current one on the test split.

    python flows/retraining_pipeline.py            # run once (Prefect's embedded default server)
    python flows/retraining_pipeline.py --serve    # serve it on a daily schedule

Each parallel stage's plan and what it cost are the artifact ``amorsize-<task>`` and, with the
model, the MLflow run's ``amorsize/<stage>.json``; the next run starts from its record.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.runtime import deployment, flow_run
from prefect.variables import Variable

from amorsize_flows.examples.pipeline import features, stages
from amorsize_flows.prefect import amorsize_task, variable_name

FLOW_NAME = "retraining-pipeline"
DAILY = "0 3 * * *"

featurize = amorsize_task(features.featurize_row).with_options(name="featurize")
train_family = amorsize_task(stages.train_family).with_options(name="train_family")


def data_dir() -> Path:
    """AMORSIZE_PIPELINE_DATA, else a folder in the temp dir (kept between runs)."""
    default = Path(tempfile.gettempdir()) / "amorsize-retraining-pipeline"
    return Path(os.environ.get("AMORSIZE_PIPELINE_DATA", default))


@task
def receive_export(root: str) -> list[str]:
    return stages.receive_export(root)


@task
def load_new(root: str) -> dict[str, Any]:
    return stages.ingest_new(root)


@task
def rows_to_featurize(root: str) -> dict[str, Any]:
    return stages.rows_to_featurize(root)


@task
def save_features(root: str, row_ids: list[str], computed: list[list[float]]) -> int:
    return stages.save_features(root, row_ids, computed)


@task
def check_drift(root: str, summary: dict[str, Any], policy: str) -> dict[str, Any]:
    return stages.check_drift(root, summary, policy)


@task
def tune(root: str, families: list[str], trials: int, batch: int) -> dict[str, Any]:
    return stages.tune_families(root, families, trials, batch)


@task
def evaluate_and_register(
    root: str, fitted: list[dict[str, Any]], entries: dict[str, Any], reports: dict[str, Any]
) -> dict[str, Any]:
    return stages.evaluate_and_register(root, fitted, entries, reports)


def _stage_entry(task_name: str) -> dict[str, Any]:
    """The plan and record an amorsize task kept in its Variable for this flow."""
    name = variable_name(task_name, flow_run.flow_name or FLOW_NAME, deployment.name or "")
    value = Variable.get(name, default=None)
    return value if isinstance(value, dict) else {}


@flow(name=FLOW_NAME, log_prints=True)
def retraining_pipeline(
    families: list[str] | None = None,
    trials_per_family: int = 4,
    trial_batch: int = 2,
    policy: str = "scheduled",
    receive: bool = True,
) -> dict[str, Any]:
    """One day of the pipeline; returns what it loaded, decided and registered."""
    root = str(data_dir())
    if receive:
        print(f"export received: {receive_export(root)}")
    summary = load_new(root)
    print(f"loaded {summary}")
    todo = rows_to_featurize(root)
    if todo["row_ids"]:
        save_features(root, todo["row_ids"], featurize(todo["pixels"]))
    decision = check_drift(root, summary, policy)
    print(f"retrain: {decision['retrain']} ({'; '.join(decision['reasons'])})")
    if not decision["retrain"]:
        return {"loaded": summary, "decision": decision, "registered": None}
    tuned = tune(root, families or stages.DEFAULT_FAMILIES, trials_per_family, trial_batch)
    fitted = train_family(stages.family_specs(root, tuned["best"]), data_dir=root)
    entries = {"featurize": _stage_entry("featurize"), "train_family": _stage_entry("train_family")}
    entries |= {f"cv_trial_batch{n}": batch for n, batch in enumerate(tuned["batches"], 1)}
    reports = {"ingest": summary, "drift": decision, "tuning": tuned["best"]}
    registered = evaluate_and_register(root, fitted, entries, reports)
    print(
        f"model version {registered['version']} ({registered['model']}): "
        f"{'champion' if registered['champion'] else 'not promoted'}, {registered['why']}"
    )
    return {"loaded": summary, "decision": decision, "registered": registered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=f"serve on the cron {DAILY!r}")
    args = parser.parse_args()
    if args.serve:
        retraining_pipeline.serve(name="daily-retraining", cron=DAILY)
        return
    result = retraining_pipeline()
    print(f"\ndata, MLflow store and models: {data_dir()}")
    metrics = (result["registered"] or {}).get("metrics", {})
    print({name: round(value, 4) for name, value in metrics.items() if name.startswith("test_")})


if __name__ == "__main__":
    main()
