"""The stage functions of a scheduled retraining pipeline, on data that ships with scikit-learn.

The Airflow DAG (``dags/digits_ensemble.py``) and the Prefect flow
(``flows/digits_ensemble.py``) map these functions in parallel with amorsize-flows. They live
in an importable module, not in the DAG file or flow script, so that worker processes of any start
method can import them. Every parallel stage is a function of ONE item (plus fixed keyword
arguments) returning plain JSON-friendly values, because orchestrators pass results between
tasks as JSON (Airflow XCom). Trained models are files: XCom is no place for megabytes.

The data is scikit-learn's bundled handwritten digits (1,797 8x8 images): no download.
"""

from __future__ import annotations

import itertools
import json
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.svm import SVC

__all__ = [
    "cv_score",
    "ensemble_specs",
    "evaluate",
    "extract_features",
    "load_dataset",
    "make_batches",
    "param_grid",
    "predict_batch",
    "save_model",
    "select_best",
    "train_member",
]

# Digits are 8x8; upsampling to 32x32 gives the gradient histograms enough cells to describe
# strokes, as a real image pipeline would work at a useful resolution.
_UPSAMPLE = 4
_CELL = 8  # pixels per histogram cell side at 32x32: a 4x4 grid of cells
_BINS = 9  # unsigned gradient orientations in 20-degree bins, as in classic HOG


def load_dataset(test_size: float = 0.25, seed: int = 0) -> dict[str, Any]:
    """Load the digits and split them, stratified, into train and test sets of plain lists."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"`test_size` must be between 0 and 1, got {test_size!r}")
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0,
        digits.target,
        test_size=test_size,
        random_state=seed,
        stratify=digits.target,
    )
    return {
        "train_images": x_train.tolist(),
        "train_labels": y_train.tolist(),
        "test_images": x_test.tolist(),
        "test_labels": y_test.tolist(),
    }


def extract_features(image: list[float]) -> list[float]:
    """Features of one 8x8 digit: pixels, ink profiles, gradient histograms and moments."""
    pixels = np.asarray(image, dtype=float)
    if pixels.shape != (64,):
        raise ValueError(f"`image` must hold 64 pixel values (8x8), got {pixels.size}")
    small = pixels.reshape(8, 8)
    large = np.kron(small, np.ones((_UPSAMPLE, _UPSAMPLE)))
    gy, gx = np.gradient(large)
    magnitude = np.hypot(gx, gy)
    orientation = np.rad2deg(np.arctan2(gy, gx)) % 180.0
    histograms = []
    for row, col in itertools.product(range(0, large.shape[0], _CELL), repeat=2):
        cell = np.s_[row : row + _CELL, col : col + _CELL]
        histogram, _ = np.histogram(
            orientation[cell], bins=_BINS, range=(0.0, 180.0), weights=magnitude[cell]
        )
        histograms.append(histogram / (np.linalg.norm(histogram) + 1e-6))
    ink = small.sum() + 1e-6
    rows, cols = np.indices(small.shape)
    centre_row, centre_col = (rows * small).sum() / ink, (cols * small).sum() / ink
    moments = [
        centre_row / 8,
        centre_col / 8,
        ((rows - centre_row) ** 2 * small).sum() / ink / 16,
        ((cols - centre_col) ** 2 * small).sum() / ink / 16,
    ]
    features = np.concatenate(
        [pixels, small.sum(axis=1) / 8, small.sum(axis=0) / 8, *histograms, moments]
    )
    return [float(value) for value in features]


def param_grid(
    c_values: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0),
    gamma_values: tuple[float, ...] = (0.003, 0.01, 0.03),
) -> list[dict[str, float]]:
    """The hyperparameter grid of the SVC: one dict per point."""
    if not c_values or not gamma_values:
        raise ValueError("`c_values` and `gamma_values` must each hold at least one value")
    return [{"C": c, "gamma": gamma} for c, gamma in itertools.product(c_values, gamma_values)]


def cv_score(
    params: dict[str, float],
    *,
    features: list[list[float]],
    labels: list[int],
    folds: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validate one grid point; return its mean and spread of accuracy."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"`folds` must be an int >= 2, got {folds!r}")
    x, y = np.asarray(features), np.asarray(labels)
    started = time.perf_counter()
    scores = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = SVC(**params).fit(x[train], y[train])
        scores.append(float(model.score(x[test], y[test])))
    return {
        "params": dict(params),
        "mean_score": float(np.mean(scores)),
        "std_score": float(np.std(scores)),
        "fit_seconds": time.perf_counter() - started,
    }


def select_best(scores: list[dict[str, Any]]) -> dict[str, float]:
    """The parameters of the best-scoring grid point."""
    if not scores:
        raise ValueError("`scores` is empty: the grid search produced no result")
    return dict(max(scores, key=lambda score: score["mean_score"])["params"])


def ensemble_specs(
    params: dict[str, float], n_members: int = 6, seed: int = 0, model_dir: str = "models"
) -> list[dict[str, Any]]:
    """One spec per ensemble member: the best parameters, a bootstrap seed, where to save it."""
    if isinstance(n_members, bool) or not isinstance(n_members, int) or n_members < 1:
        raise ValueError(f"`n_members` must be an int >= 1, got {n_members!r}")
    return [
        {"params": dict(params), "seed": seed + index, "path": f"{model_dir}/member-{index}.pkl"}
        for index in range(n_members)
    ]


def train_member(
    spec: dict[str, Any], *, features: list[list[float]], labels: list[int]
) -> dict[str, Any]:
    """Train one member on a bootstrap sample and save it; return where, and how it fit."""
    x, y = np.asarray(features), np.asarray(labels)
    rows = np.random.default_rng(spec["seed"]).integers(0, len(x), len(x))
    model = SVC(**spec["params"]).fit(x[rows], y[rows])
    path = Path(spec["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(model))
    out_of_bag = np.setdiff1d(np.arange(len(x)), rows)
    oob = float(model.score(x[out_of_bag], y[out_of_bag])) if len(out_of_bag) else 0.0
    return {"path": str(path), "seed": spec["seed"], "out_of_bag_score": oob}


def make_batches(features: list[list[float]], batch_size: int = 50) -> list[dict[str, Any]]:
    """Split features into inference batches that remember where they start."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")
    return [
        {"start": start, "features": features[start : start + batch_size]}
        for start in range(0, len(features), batch_size)
    ]


def predict_batch(batch: dict[str, Any], *, member_paths: list[str]) -> list[int]:
    """Majority vote of the ensemble over one batch."""
    if not member_paths:
        raise ValueError("`member_paths` is empty: train the ensemble first")
    x = np.asarray(batch["features"])
    votes = np.stack([_load_member(path).predict(x) for path in member_paths])
    return [int(np.bincount(column, minlength=10).argmax()) for column in votes.T]


_members: dict[str, Any] = {}


def _load_member(path: str) -> Any:
    """Each process loads a member once: a worker reuses it for every batch it gets."""
    if path not in _members:
        _members[path] = pickle.loads(Path(path).read_bytes())  # our own file, written above
    return _members[path]


def evaluate(y_true: list[int], y_pred: list[int]) -> dict[str, Any]:
    """Accuracy, macro F1 and the confusion matrix."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
        "confusion_matrix": confusion_matrix(y_true, y_pred).tolist(),
        "n_test": len(y_true),
    }


def save_model(
    members: list[dict[str, Any]], metrics: dict[str, Any], out_dir: str
) -> dict[str, str]:
    """Write the ensemble's manifest and its metrics next to the member files."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "ensemble.json"
    manifest.write_text(json.dumps({"members": members}, indent=2))
    metrics_path = directory / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return {"manifest": str(manifest), "metrics": str(metrics_path)}
