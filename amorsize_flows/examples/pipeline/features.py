"""Features with a versioned transformation: each row's features are computed once per version
and kept beside the store, so a run featurizes only its new rows, and a new version all of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..retraining import extract_features
from .ingest import PIXELS

__all__ = ["VERSION", "featurize_row", "features_for", "rows_to_featurize", "save_features"]

# Bump when featurize_row changes: features of another version are computed again.
VERSION = "hog-v1"


def featurize_row(pixels: list[float]) -> list[float]:
    """One row's features: the 8x8 image scaled to [0, 1], then pixels, ink profiles, gradient
    histograms and moments (``retraining.extract_features``)."""
    if len(pixels) != len(PIXELS):
        raise ValueError(f"a row has {len(PIXELS)} pixel values, got {len(pixels)}")
    return extract_features([value / 16.0 for value in pixels])


def _path(store_dir: str | Path) -> Path:
    return Path(store_dir) / f"features-{VERSION}.parquet"


def rows_to_featurize(
    store: pd.DataFrame, store_dir: str | Path
) -> tuple[list[str], list[list[float]]]:
    """The row ids and pixels of the store's rows that have no features of this version yet."""
    path = _path(store_dir)
    done = set(pd.read_parquet(path, columns=["row_id"])["row_id"]) if path.exists() else set()
    todo = store[~store["row_id"].isin(done)]
    return todo["row_id"].tolist(), todo[PIXELS].to_numpy(dtype=float).tolist()


def save_features(store_dir: str | Path, row_ids: list[str], features: list[list[float]]) -> int:
    """Append computed features to this version's file; returns the rows it now holds."""
    if len(row_ids) != len(features):
        raise ValueError(f"{len(row_ids)} row ids but {len(features)} feature rows")
    path = _path(store_dir)
    frame = pd.DataFrame(np.asarray(features, dtype=float).reshape(len(row_ids), -1))
    frame.columns = [f"f{index}" for index in frame.columns]
    frame.insert(0, "row_id", row_ids)
    if path.exists():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    frame.to_parquet(path, index=False)
    return len(frame)


def features_for(store: pd.DataFrame, store_dir: str | Path) -> np.ndarray:
    """The feature matrix of ``store``'s rows, in its order (every row must be featurized)."""
    frame = pd.read_parquet(_path(store_dir)).set_index("row_id")
    missing = set(store["row_id"]) - set(frame.index)
    if missing:
        raise LookupError(f"{len(missing)} rows have no {VERSION} features: run the feature stage")
    return frame.loc[store["row_id"]].to_numpy(dtype=float)
