"""Model families and their Bayesian search: Optuna asks each family's study for trials in
batches, every batch's trials are one parallel map (each trial a 5-fold cross-validation), and
the scores are told back. The caller supplies the map, so the package plans each batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["FAMILIES", "build", "cv_trial", "tune"]

FOLDS = 5
Mapper = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


def _logistic(trial: optuna.Trial) -> dict[str, Any]:
    return {"C": trial.suggest_float("C", 1e-2, 10.0, log=True)}


def _forest(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 40, 120, step=20),
        "max_depth": trial.suggest_int("max_depth", 6, 20),
        "max_features": trial.suggest_categorical("max_features", ["sqrt", "log2"]),
    }


def _boosting(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.05, 0.3, log=True),
        "max_iter": trial.suggest_int("max_iter", 20, 60, step=10),
        "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 7, 31),
    }


def _mlp(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "hidden": trial.suggest_int("hidden", 32, 128, step=32),
        "alpha": trial.suggest_float("alpha", 1e-5, 1e-2, log=True),
    }


def _lightgbm(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 20, 60, step=10),
        "learning_rate": trial.suggest_float("learning_rate", 0.05, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 31),
    }


# Each family's search space. Inner threads are 1: the map's workers are the parallelism.
FAMILIES: dict[str, Callable[[optuna.Trial], dict[str, Any]]] = {
    "logistic_regression": _logistic,
    "random_forest": _forest,
    "gradient_boosting": _boosting,
    "mlp": _mlp,
    "lightgbm": _lightgbm,
}


def build(family: str, params: dict[str, Any], seed: int = 0) -> ClassifierMixin:
    """An unfitted estimator of ``family`` with ``params``."""
    if family == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, **params))
    if family == "random_forest":
        return RandomForestClassifier(random_state=seed, **params)
    if family == "gradient_boosting":
        return HistGradientBoostingClassifier(early_stopping=False, random_state=seed, **params)
    if family == "mlp":
        hidden, alpha = params["hidden"], params["alpha"]
        return make_pipeline(
            StandardScaler(),
            MLPClassifier(
                (hidden,), alpha=alpha, max_iter=300, early_stopping=True, random_state=seed
            ),
        )
    if family == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(random_state=seed, n_jobs=1, verbose=-1, **params)
    raise ValueError(f"unknown model family {family!r}; expected one of {sorted(FAMILIES)}")


def cv_trial(spec: dict[str, Any], *, features: Any, labels: Any) -> dict[str, Any]:
    """One trial: 5-fold stratified cross-validation of its family and parameters (macro F1)."""
    x, y = np.asarray(features), np.asarray(labels)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=0)
    scores = cross_val_score(
        build(spec["family"], spec["params"]), x, y, cv=folds, scoring="f1_macro"
    )
    return {**spec, "score": float(scores.mean()), "score_std": float(scores.std())}


def tune(
    families: list[str],
    run_map: Mapper,
    *,
    trials_per_family: int,
    batch_size: int,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each family's best parameters after ``trials_per_family`` trials, asked ``batch_size``
    per family at a time; ``run_map(func, specs)`` evaluates a batch (``cv_trial`` bound to the
    data) and returns its results in order."""
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise ValueError(f"`families` must be some of {sorted(FAMILIES)}, got {families!r}")
    if trials_per_family < 1 or batch_size < 1:
        raise ValueError("`trials_per_family` and `batch_size` must be at least 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = {
        name: optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        for name in families
    }
    done = 0
    while done < trials_per_family:
        count = min(batch_size, trials_per_family - done)
        asked = [(name, studies[name].ask()) for name in families for _ in range(count)]
        specs = [
            {"family": name, "trial": trial.number, "params": FAMILIES[name](trial)}
            for name, trial in asked
        ]
        for (name, trial), result in zip(asked, run_map(cv_trial, specs), strict=True):
            studies[name].tell(trial, result["score"])
        done += count
    return {
        name: {
            "params": _params(name, study.best_trial),
            "cv_f1": float(study.best_value),
            "trials": len(study.trials),
        }
        for name, study in studies.items()
    }


def _params(family: str, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return FAMILIES[family](optuna.trial.FixedTrial(trial.params))
