"""The cookbook's stages on real data: each gives what the plain loop or scikit-learn gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from amorsize_flows.examples.cookbook import (
    audio,
    cross_validation,
    ensembles,
    images,
    inference,
    search,
)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def test_image_features_of_real_photographs(tmp_path: Path) -> None:
    paths = images.write_tiles(tmp_path, 24)
    features = images.featurize_images(paths)
    assert features.shape == (24, len(images.hog_features(paths[0])))
    assert np.array_equal(features, np.stack([images.hog_features(path) for path in paths]))
    # The two photographs (even tiles: one, odd tiles: the other) differ in texture.
    assert not np.allclose(features[0], features[1])


def test_audio_features_tell_chords_from_chirps(tmp_path: Path) -> None:
    paths = audio.write_clips(tmp_path, 12)
    features = audio.featurize_clips(paths)
    assert features.shape == (12, 2 * audio.N_MFCC)
    assert np.allclose(features, np.stack([audio.mfcc_features(path) for path in paths]))
    # A chord holds its spectrum, a chirp sweeps: the bands' spread over time tells them apart.
    spread = features[:, audio.N_MFCC + 1 :].mean(axis=1)
    assert spread[1::2].mean() > spread[0::2].mean()


def test_kfold_scores_are_scikit_learns(digits) -> None:
    x, y = digits
    model = RandomForestClassifier(30, random_state=0)
    scores = cross_validation.kfold_scores(model, x, y, folds=5)
    expected = cross_val_score(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert np.allclose(scores, expected)


def test_time_series_folds_train_on_the_past_and_forecast() -> None:
    x, y = cross_validation.lagged_series(2_000)
    assert np.array_equal(x[1:, -1], y[:-1])  # each row's last lag is the previous target
    scores = cross_validation.time_series_scores(Ridge(), x, y, folds=4)
    assert len(scores) == 4 and min(scores) > 0.8  # the seasons are learnable from the lags


def test_grid_search_finds_what_grid_search_cv_finds(digits) -> None:
    x, y = digits
    grid = {"C": [0.1, 1.0, 10.0], "gamma": [0.01, 0.1]}
    ranked = search.grid_search(SVC(), grid, x[:600], y[:600])
    reference = GridSearchCV(SVC(), grid, cv=3).fit(x[:600], y[:600])
    assert ranked[0][0] == reference.best_params_
    assert ranked[0][1] == pytest.approx(reference.best_score_)
    assert len(ranked) == 6


def test_bayesian_search_tells_every_batch_before_asking_the_next(digits) -> None:
    x, y = digits

    def space(trial):
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}

    study = search.bayesian_search(
        LogisticRegression(max_iter=300), space, x[:500], y[:500], trials=6, batch=3
    )
    assert len(study.trials) == 6
    assert all(trial.value is not None for trial in study.trials)
    assert study.best_value > 0.85


def test_ensemble_members_vote_better_than_one_member(digits) -> None:
    x, y = digits
    members = ensembles.train_members(DecisionTreeClassifier(), x[:1200], y[:1200], members=9)
    assert len({id(member) for member in members}) == 9
    held_out_x, held_out_y = x[1200:], y[1200:]
    voted = (ensembles.vote(members, held_out_x) == held_out_y).mean()
    alone = np.mean([member.score(held_out_x, held_out_y) for member in members])
    assert voted > alone


def test_batch_inference_keeps_row_order(digits) -> None:
    x, y = digits
    model = LogisticRegression(max_iter=300).fit(x, y)
    predicted = inference.predict_in_batches(model, x, batch_rows=100)
    assert np.array_equal(predicted, model.predict(x))
    with pytest.raises(ValueError, match="`batch_rows` must be at least 1"):
        inference.predict_in_batches(model, x, batch_rows=0)
    with pytest.raises(ValueError, match="no rows"):
        inference.predict_in_batches(model, x[:0])


def test_cookbook_stages_pass_the_planners_options_on(digits) -> None:
    x, y = digits
    with pytest.raises(ValueError, match="`n_jobs` must be an int >= 1 or None, got 0"):
        cross_validation.kfold_scores(Ridge(), x, y, folds=3, n_jobs=0)
    with pytest.raises(TypeError, match="unexpected option"):
        inference.predict_in_batches(Ridge().fit(x, y), x, workers=2)
