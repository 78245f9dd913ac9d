"""Each family's best model refitted on the training split (one item each of a parallel map),
then voting and stacking over them, all judged on the validation split."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import StackingClassifier, VotingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression

from .evaluation import classification_metrics
from .models import build

__all__ = ["candidates", "fit_family", "load_model"]


def fit_family(spec: dict[str, Any], *, features: Any, labels: Any) -> dict[str, Any]:
    """Fit one family's best parameters on the training rows and save the model to
    ``spec["path"]``; returns the spec."""
    model = build(spec["family"], spec["params"]).fit(np.asarray(features), np.asarray(labels))
    path = Path(spec["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(model))
    return dict(spec)


def load_model(path: str | Path) -> Any:
    """A model this pipeline saved (our own file: trusted)."""
    return pickle.loads(Path(path).read_bytes())


def candidates(
    fitted: list[dict[str, Any]], x_val: np.ndarray, y_val: np.ndarray
) -> dict[str, tuple[Any, dict[str, float]]]:
    """Every fitted family, their soft vote and their stack, with validation metrics.

    The ensembles combine the frozen family models (fitted on the training rows only); the
    stack's final estimator learns from their out-of-fold predictions on the validation rows,
    so no model is judged on rows it was fitted on, except the stack's own final step."""
    if not fitted:
        raise ValueError("no fitted family: train at least one")
    members = [(spec["family"], FrozenEstimator(load_model(spec["path"]))) for spec in fitted]
    models: dict[str, Any] = {name: model for name, model in members}
    if len(members) > 1:
        models["voting"] = VotingClassifier(members, voting="soft").fit(x_val, y_val)
        models["stacking"] = StackingClassifier(
            members, final_estimator=LogisticRegression(max_iter=1000), cv=5
        ).fit(x_val, y_val)
    return {
        name: (model, classification_metrics(y_val, model.predict_proba(x_val), model.classes_))
        for name, model in models.items()
    }
