"""Hyperparameter search: every point of a grid, or Bayesian trials (Optuna) asked in batches,
each point scored by cross-validation; each grid, and each batch of trials, is one map."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import ParameterGrid, cross_val_score

import amorsize_flows as amz

__all__ = ["bayesian_search", "cv_score", "grid_search"]

Space = Callable[[optuna.Trial], dict[str, Any]]  # asks a trial for one point's parameters


def cv_score(
    params: Mapping[str, Any],
    *,
    estimator: BaseEstimator,
    x: np.ndarray,
    y: np.ndarray,
    folds: int = 3,
) -> float:
    """The mean cross-validated score of the estimator with ``params``."""
    model = clone(estimator).set_params(**params)
    return float(cross_val_score(model, x, y, cv=folds).mean())


def grid_search(
    estimator: BaseEstimator,
    grid: Mapping[str, Sequence[Any]],
    x: np.ndarray,
    y: np.ndarray,
    **options: Any,
) -> list[tuple[dict[str, Any], float]]:
    """Every point of ``grid`` with its score, best first."""
    points = list(ParameterGrid(dict(grid)))
    scores = amz.execute(
        functools.partial(cv_score, estimator=estimator, x=x, y=y), points, **options
    )
    return sorted(zip(points, scores, strict=True), key=lambda pair: -pair[1])


def bayesian_search(
    estimator: BaseEstimator,
    space: Space,
    x: np.ndarray,
    y: np.ndarray,
    *,
    trials: int = 12,
    batch: int = 4,
    seed: int = 0,
    **options: Any,
) -> optuna.Study:
    """An Optuna study of ``trials`` points, asked ``batch`` at a time (ask-and-tell): each batch
    is one map, planned from the previous batch's record, and told before the next is asked."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    score = functools.partial(cv_score, estimator=estimator, x=x, y=y)
    record = None
    for start in range(0, trials, batch):
        asked = [study.ask() for _ in range(min(batch, trials - start))]
        run = amz.run(score, [space(trial) for trial in asked], history=record, **options)
        for trial, value in zip(asked, run.results, strict=True):
            study.tell(trial, value)
        record = run.record
    return study
