"""Correlation metrics of IQA (SRCC, PLCC, KRCC via scipy), at patch level and at image level.

Image level is the protocol of HyperIQA's evaluation: the mean of an image's patch predictions against its label.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _finite_or_zero(value: float) -> float:
    # a constant prediction has no rank information: scipy says nan, we say 0 so schedulers can compare
    return float(value) if np.isfinite(value) else 0.0


def correlations(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    pred = np.asarray(pred, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(label) == 0:
        return {"srcc": 0.0, "plcc": 0.0, "krcc": 0.0}
    return {
        "srcc": _finite_or_zero(stats.spearmanr(pred, label)[0]),
        "plcc": _finite_or_zero(stats.pearsonr(pred, label)[0]),
        "krcc": _finite_or_zero(stats.kendalltau(pred, label)[0]),
    }


def image_means(patch_pred: np.ndarray, image_index: np.ndarray, n_images: int) -> np.ndarray:
    """Mean patch prediction per image; ``image_index`` maps each patch to 0..n_images-1."""
    sums = np.bincount(image_index, weights=patch_pred, minlength=n_images)
    counts = np.bincount(image_index, minlength=n_images)
    return sums / np.maximum(counts, 1)
