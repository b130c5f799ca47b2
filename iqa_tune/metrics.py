"""Correlation metrics of IQA (SRCC, PLCC, KRCC via scipy), at patch level and at image level.

Image level is the protocol of HyperIQA's evaluation: the mean of an image's patch predictions against its label.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def srcc(pred: np.ndarray, label: np.ndarray) -> float:
    """Spearman's rank correlation, NaN where undefined (see :func:`correlations`)."""
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(label) == 0:
        return math.nan
    return float(stats.spearmanr(pred, label)[0])


def correlations(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """SRCC, PLCC and KRCC; NaN where they are undefined (fewer than 2 values, constant predictions or labels).

    Undefined is not zero: a collapsed model that predicts one value has no rank information, and scoring it 0
    would let it beat epochs with a negative correlation. Selection treats NaN as the worst value instead
    (``records.better``)."""
    pred = np.asarray(pred, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(label) == 0:
        return {"srcc": math.nan, "plcc": math.nan, "krcc": math.nan}
    return {"srcc": srcc(pred, label), "plcc": float(stats.pearsonr(pred, label)[0]),
            "krcc": float(stats.kendalltau(pred, label)[0])}


def image_means(patch_pred: np.ndarray, image_index: np.ndarray, n_images: int) -> np.ndarray:
    """Mean patch prediction per image; ``image_index`` maps each patch to 0..n_images-1."""
    sums = np.bincount(image_index, weights=patch_pred, minlength=n_images)
    counts = np.bincount(image_index, minlength=n_images)
    return sums / np.maximum(counts, 1)
