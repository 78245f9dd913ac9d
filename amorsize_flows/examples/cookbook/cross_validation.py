"""Cross-validation: one fit per fold, the folds mapped. K-fold for independent rows, and
time-series splits (each fold trains on the past only) for a reproducible seasonal series."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import StratifiedKFold, TimeSeriesSplit

import amorsize_flows as amz

__all__ = ["kfold_scores", "lagged_series", "time_series_scores"]

Fold = tuple[np.ndarray, np.ndarray]  # row indices to train on, and to score on
LAGS = 24  # past values each row of the series sees


def kfold_scores(
    estimator: BaseEstimator, x: np.ndarray, y: np.ndarray, folds: int = 5, **options: Any
) -> list[float]:
    """The estimator's score on each of ``folds`` stratified folds (shuffled, seed 0)."""
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y))
    return _scores(estimator, x, y, splits, options)


def time_series_scores(
    estimator: BaseEstimator, x: np.ndarray, y: np.ndarray, folds: int = 5, **options: Any
) -> list[float]:
    """The estimator's score on each of ``folds`` forward-chaining splits of a series."""
    return _scores(estimator, x, y, list(TimeSeriesSplit(folds).split(x)), options)


def lagged_series(length: int = 4_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A daily-and-weekly seasonal series with trend and noise, as rows of its LAGS previous
    values (x) and the value that follows them (y)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(length + LAGS)
    series = (
        np.sin(2 * np.pi * hours / 24)
        + 0.5 * np.sin(2 * np.pi * hours / 168)
        + hours / length
        + rng.normal(0, 0.2, hours.size)
    )
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], LAGS)
    return np.ascontiguousarray(x), series[LAGS:]


def fit_fold(fold: Fold, *, estimator: BaseEstimator, x: np.ndarray, y: np.ndarray) -> float:
    """Fit a fresh copy of the estimator on the fold's training rows; its score on the rest."""
    train, test = fold
    return float(clone(estimator).fit(x[train], y[train]).score(x[test], y[test]))


def _scores(
    estimator: BaseEstimator, x: np.ndarray, y: np.ndarray, splits: list[Fold], options: dict
) -> list[float]:
    fit = functools.partial(fit_fold, estimator=estimator, x=x, y=y)
    return amz.execute(fit, splits, **options)
