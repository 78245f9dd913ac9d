"""A small digits ensemble on Prefect 3, every parallel stage planned by amorsize-flows: the
workload of the real-deployment tests (the whole pipeline is retraining_pipeline.py).

The same pipeline as ``dags/digits_ensemble.py``: load scikit-learn's digits and split them;
extract features per image; cross-validate an SVC hyperparameter grid; train an ensemble on
bootstrap samples; run batch inference; evaluate; save the model with its metrics. Each parallel
stage is one ``@amorsize_task`` run; its plan and what it cost are the table artifact
``amorsize-<task-name>``, and its record, kept in the Variable ``amorsize-<task-name>``, is where the
next scheduled run starts from instead of a dry run.

    python flows/digits_ensemble.py            # run once (Prefect's embedded default server)
    python flows/digits_ensemble.py --serve    # serve it on a daily schedule

The mapped functions live in ``amorsize_flows.examples.retraining``, an importable module, so
fresh worker processes can load them (this script runs as ``__main__``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, task

from amorsize_flows.examples import retraining
from amorsize_flows.prefect import amorsize_task
from amorsize_flows.prefect.artifacts import artifact_key

# One task per stage name: each gets its own artifact and its own record for the next run.
featurize_train = amorsize_task(retraining.extract_features).with_options(name="featurize_train")
featurize_test = featurize_train.with_options(name="featurize_test")
cv_score = amorsize_task(retraining.cv_score)
train_member = amorsize_task(retraining.train_member)
predict_batch = amorsize_task(retraining.predict_batch)
PARALLEL_STAGES = (featurize_train, featurize_test, cv_score, train_member, predict_batch)
DAILY = "0 3 * * *"


def output_dir() -> Path:
    """Where models and metrics go: AMORSIZE_EXAMPLE_OUTPUT, else a folder in the temp dir."""
    default = Path(tempfile.gettempdir()) / "amorsize-retraining"
    return Path(os.environ.get("AMORSIZE_EXAMPLE_OUTPUT", default))


@task
def load() -> dict[str, Any]:
    return retraining.load_dataset(test_size=0.25, seed=0)


@task
def evaluate_and_save(
    labels: list[int], predictions: list[list[int]], members: list[dict[str, Any]], out: str
) -> dict[str, Any]:
    flat = [label for batch in predictions for label in batch]
    metrics = retraining.evaluate(labels, flat)
    paths = retraining.save_model(members, metrics, out)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], **paths}


@flow(name="digits-ensemble", log_prints=True)
def digits_ensemble(n_members: int = 6, batch_size: int = 25) -> dict[str, Any]:
    """Retrain the digits ensemble; returns its test metrics and where it was saved."""
    out = output_dir()
    data = load()
    train_features = featurize_train(data["train_images"])
    test_features = featurize_test(data["test_images"])
    scores = cv_score(retraining.param_grid(), features=train_features, labels=data["train_labels"])
    best = retraining.select_best(scores)
    specs = retraining.ensemble_specs(best, n_members=n_members, model_dir=str(out / "models"))
    members = train_member(specs, features=train_features, labels=data["train_labels"])
    paths = [member["path"] for member in members]
    batches = retraining.make_batches(test_features, batch_size=batch_size)
    predictions = predict_batch(batches, member_paths=paths)
    return evaluate_and_save(data["test_labels"], predictions, members, str(out))


def _print_plans(result: dict[str, Any]) -> None:
    """Each stage's plan, from the artifacts the run published, and where to look."""
    from prefect.artifacts import Artifact

    print("\namorsize plans of this run (Prefect table artifacts):")
    for stage in PARALLEL_STAGES:
        key = artifact_key(stage.name)
        artifact = Artifact.get(key)
        print(f"\n--- {stage.name}  (artifact '{key}')")
        print(artifact.description if artifact is not None else "  (no artifact found)")
    print(f"\ntest accuracy {result['accuracy']:.3f}, macro F1 {result['macro_f1']:.3f}")
    print(f"model and metrics: {result['manifest']}, {result['metrics']}")
    print(
        "Look: `prefect artifact ls`, or the Artifacts page of the Prefect UI (`prefect server start`)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=f"serve on the cron {DAILY!r}")
    args = parser.parse_args()
    if args.serve:
        digits_ensemble.serve(name="daily-digits-ensemble", cron=DAILY)
        return
    result = digits_ensemble()
    _print_plans(result)


if __name__ == "__main__":
    main()
