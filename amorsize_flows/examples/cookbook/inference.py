"""Batch inference: a fitted model predicts rows in batches, the batches mapped."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

import amorsize_flows as amz

__all__ = ["predict_batch", "predict_in_batches"]


def predict_batch(batch: np.ndarray, *, model: Any) -> np.ndarray:
    """The model's predictions for one batch of rows."""
    return model.predict(batch)


def predict_in_batches(
    model: Any, x: np.ndarray, batch_rows: int = 256, **options: Any
) -> np.ndarray:
    """Predictions for every row of ``x``, in order, ``batch_rows`` rows a call."""
    if batch_rows < 1:
        raise ValueError(f"`batch_rows` must be at least 1, got {batch_rows}")
    if len(x) == 0:
        raise ValueError("`x` has no rows to predict")
    batches = [x[start : start + batch_rows] for start in range(0, len(x), batch_rows)]
    return np.concatenate(
        amz.execute(functools.partial(predict_batch, model=model), batches, **options)
    )
