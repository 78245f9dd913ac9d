"""The stratified 70/15/15 split, and the full metric set for classifiers and regressors."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import label_binarize

__all__ = ["classification_metrics", "regression_metrics", "split_indices"]


def split_indices(labels: list[int], seed: int = 0) -> dict[str, list[int]]:
    """Row positions of a stratified 70/15/15 train/validation/test split."""
    positions = np.arange(len(labels))
    train, rest = train_test_split(positions, train_size=0.70, stratify=labels, random_state=seed)
    rest_labels = np.asarray(labels)[rest]
    validation, test = train_test_split(
        rest, train_size=0.5, stratify=rest_labels, random_state=seed
    )
    return {"train": train.tolist(), "validation": validation.tolist(), "test": test.tolist()}


def classification_metrics(y_true: Any, probabilities: Any, classes: Any) -> dict[str, float]:
    """Accuracy, macro precision, recall and F1, and one-vs-rest macro ROC-AUC and PR-AUC."""
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities)
    classes = np.asarray(classes)
    predicted = classes[probabilities.argmax(axis=1)]
    onehot = label_binarize(y_true, classes=classes)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        y_true, predicted, average="macro", zero_division=0
    )
    return {
        "accuracy": float(metrics.accuracy_score(y_true, predicted)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": float(metrics.roc_auc_score(onehot, probabilities, average="macro")),
        "pr_auc": float(metrics.average_precision_score(onehot, probabilities, average="macro")),
    }


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """MSE, RMSE, MAE, R2 and MAPE (MAPE over the targets that are not zero)."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    mse = float(metrics.mean_squared_error(y_true, y_pred))
    nonzero = y_true != 0
    return {
        "mse": mse,
        "rmse": mse**0.5,
        "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
        "r2": float(metrics.r2_score(y_true, y_pred)),
        "mape": float(metrics.mean_absolute_percentage_error(y_true[nonzero], y_pred[nonzero])),
    }
