"""Ensemble training: members fitted side by side on bootstrap samples, then a majority vote."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone

import amorsize_flows as amz

__all__ = ["fit_member", "train_members", "vote"]


def fit_member(seed: int, *, estimator: BaseEstimator, x: np.ndarray, y: np.ndarray) -> Any:
    """A fresh copy of the estimator fitted on a bootstrap sample of the rows drawn with
    ``seed`` (and seeded with it, where it takes a random_state)."""
    rows = np.random.default_rng(seed).integers(0, len(x), len(x))
    model = clone(estimator)
    if "random_state" in model.get_params():
        model.set_params(random_state=seed)
    return model.fit(x[rows], y[rows])


def train_members(
    estimator: BaseEstimator, x: np.ndarray, y: np.ndarray, members: int = 8, **options: Any
) -> list[Any]:
    """``members`` fitted models, the i-th from seed i."""
    fit = functools.partial(fit_member, estimator=estimator, x=x, y=y)
    return amz.execute(fit, range(members), **options)


def vote(members: list[Any], x: np.ndarray) -> np.ndarray:
    """The class most members predict for each row (ties: the smallest label)."""
    votes = np.stack([member.predict(x) for member in members])
    labels = np.unique(votes)
    counts = (votes[None, :, :] == labels[:, None, None]).sum(axis=1)
    return labels[counts.argmax(axis=0)]
