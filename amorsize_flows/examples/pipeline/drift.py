"""Drift of new rows against the rows a model was trained on: per-feature PSI and
Kolmogorov-Smirnov, and whether to retrain."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import ks_2samp

__all__ = ["drift_report", "population_stability"]

PSI_DRIFT = 0.2  # the usual reading: below 0.1 stable, 0.1 to 0.2 moderate, above 0.2 shifted
KS_ALPHA = 0.01  # per feature, Bonferroni-corrected over the features tested
DRIFTED_SHARE = 0.1  # the data drifted when this share of features did


def population_stability(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of one feature, on the reference's quantile bins (ties merged)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:  # a (nearly) constant feature: compare the share at its value
        edges = np.array([-np.inf, edges[0] + 1e-9, np.inf])
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / len(reference)
    actual = np.histogram(current, edges)[0] / len(current)
    expected, actual = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift_report(reference: np.ndarray, current: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per-feature PSI and KS of ``current`` against ``reference`` (rows x features), and
    whether the data drifted. Features constant in both are skipped."""
    if reference.shape[1] != current.shape[1] or len(names) != reference.shape[1]:
        raise ValueError("`reference`, `current` and `names` must describe the same features")
    if len(reference) < 20 or len(current) < 20:
        return {"drifted": False, "why": "under 20 rows on a side: too few to tell", "features": {}}
    varying = [
        index
        for index in range(reference.shape[1])
        if np.ptp(reference[:, index]) > 0 or np.ptp(current[:, index]) > 0
    ]
    alpha = KS_ALPHA / max(1, len(varying))
    features = {}
    for index in varying:
        test = ks_2samp(reference[:, index], current[:, index])
        psi = population_stability(reference[:, index], current[:, index])
        features[names[index]] = {
            "psi": round(psi, 4),
            "ks_p": float(test.pvalue),
            "drifted": bool(psi > PSI_DRIFT or test.pvalue < alpha),
        }
    drifted = [name for name, stats in features.items() if stats["drifted"]]
    share = len(drifted) / max(1, len(features))
    return {
        "drifted": share >= DRIFTED_SHARE,
        "why": f"{len(drifted)} of {len(features)} features shifted (PSI > {PSI_DRIFT} or KS)",
        "drifted_features": drifted,
        "features": features,
    }
