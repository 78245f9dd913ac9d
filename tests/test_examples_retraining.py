"""The retraining pipeline's stage functions, run serially on the real digits data."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

from amorsize_flows.examples import retraining


@pytest.fixture(scope="module")
def data() -> dict:
    return retraining.load_dataset(test_size=0.25, seed=0)


def test_dataset_is_plain_json(data: dict) -> None:
    assert json.loads(json.dumps(data)) == data
    assert len(data["train_images"]) + len(data["test_images"]) == 1797


def test_features_are_deterministic_and_fixed_length(data: dict) -> None:
    first = retraining.extract_features(data["train_images"][0])
    assert first == retraining.extract_features(data["train_images"][0])
    assert {len(retraining.extract_features(image)) for image in data["train_images"][:20]} == {
        len(first)
    }


def test_pipeline_end_to_end(data: dict, tmp_path: Path) -> None:
    features = [retraining.extract_features(image) for image in data["train_images"]]
    score = functools.partial(retraining.cv_score, features=features, labels=data["train_labels"])
    scores = [score(params) for params in retraining.param_grid((3.0,), (0.01, 0.03))]
    assert all(result["mean_score"] > 0.8 for result in scores)
    best = retraining.select_best(scores)
    specs = retraining.ensemble_specs(best, n_members=3, model_dir=str(tmp_path / "models"))
    train = functools.partial(
        retraining.train_member, features=features, labels=data["train_labels"]
    )
    members = [train(spec) for spec in specs]
    test_features = [retraining.extract_features(image) for image in data["test_images"]]
    paths = [member["path"] for member in members]
    predictions = [
        label
        for batch in retraining.make_batches(test_features, 100)
        for label in retraining.predict_batch(batch, member_paths=paths)
    ]
    metrics = retraining.evaluate(data["test_labels"], predictions)
    assert metrics["accuracy"] > 0.9
    saved = retraining.save_model(members, metrics, str(tmp_path / "out"))
    assert json.loads(Path(saved["metrics"]).read_text())["accuracy"] == metrics["accuracy"]
    assert len(json.loads(Path(saved["manifest"]).read_text())["members"]) == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: retraining.load_dataset(test_size=1.5), "`test_size` must be between 0 and 1"),
        (lambda: retraining.extract_features([0.0] * 10), "must hold 64 pixel values"),
        (
            lambda: retraining.cv_score({}, features=[], labels=[], folds=1),
            "`folds` must be an int >= 2",
        ),
        (lambda: retraining.select_best([]), "`scores` is empty"),
        (lambda: retraining.ensemble_specs({}, n_members=0), "`n_members` must be an int >= 1"),
        (lambda: retraining.make_batches([], batch_size=0), "`batch_size` must be an int >= 1"),
        (
            lambda: retraining.predict_batch({"features": []}, member_paths=[]),
            "`member_paths` is empty",
        ),
        (lambda: retraining.evaluate([1, 2], [1]), "2 labels but 1 predictions"),
    ],
)
def test_bad_arguments(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
