"""Correlation metrics of IQA (SRCC, PLCC, KRCC via scipy), at patch level and at image level, and the signals of
the fixed evaluation crops (patch SRCC, within-image disagreement, PLCC after a logistic fit).

Image level is the protocol of HyperIQA's evaluation: the mean of an image's patch predictions against its label.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit


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


# ----------------------------------------------------------------------------------------------------------------
# signals of the fixed evaluation crops before they are averaged (crops: (n_images, n_crops), one row per image)


def patch_srcc(crops: np.ndarray, labels: np.ndarray) -> float:
    """SRCC of every fixed crop's prediction against its image's label: the scale training SRCC is measured on
    (per patch), so train and test can be compared without the averaging that image-level SRCC adds."""
    crops = np.asarray(crops, dtype=np.float64)
    return srcc(crops.reshape(-1), np.repeat(np.asarray(labels, dtype=np.float64), crops.shape[1]))


def disagreement(crops: np.ndarray) -> tuple[float, float]:
    """(crop_sd, ratio): how much one image's crops disagree.

    ``crop_sd`` is the mean over images of the standard deviation of an image's crop predictions (label units);
    ``ratio`` divides it by the standard deviation of the image means, so it is scale-free and comparable across
    epochs and runs whose predictions drift in scale: 0 when every image's crops agree, 1 when the crops of one
    image spread as widely as the images do. Population SDs (ddof 0): one crop per image gives 0, not NaN. The
    ratio is NaN when every image has the same mean."""
    crops = np.asarray(crops, dtype=np.float64)
    if crops.size == 0:
        return math.nan, math.nan
    crop_sd = float(crops.std(axis=1).mean())
    spread = float(crops.mean(axis=1).std())
    return crop_sd, (crop_sd / spread if spread > 0 else math.nan)


def _logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic of VQEG's protocol: from b2 (far left) to b1 (far right), centred at b3."""
    return b2 + (b1 - b2) / (1 + np.exp(np.clip(-(x - b3) / b4, -50, 50)))


def logistic_plcc(pred: np.ndarray, labels: np.ndarray) -> float:
    """PLCC after the customary monotonic mapping of predictions to labels (4-parameter logistic, least squares):
    what cross-dataset tables report when label scales differ (MOS 1-5, z-scores 0-100, DMOS).

    The sign follows the direction of the fitted curve, so a model that ranks backwards has a negative PLCC, as
    its SRCC does. Falls back to plain Pearson when the fit fails (no convergence, fewer than 5 images for 4
    parameters, or a constant fitted curve). NaN where PLCC is undefined (see :func:`correlations`)."""
    pred = np.asarray(pred, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(labels) == 0:
        return math.nan
    pearson = float(stats.pearsonr(pred, labels)[0])
    if len(pred) < 5:
        return pearson
    start = [labels.max(), labels.min(), float(np.median(pred)), float(pred.std()) * (1 if pearson >= 0 else -1)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # no covariance estimate: the fit itself is fine
            b, _ = curve_fit(_logistic4, pred, labels, p0=start, maxfev=10000)
    except (RuntimeError, ValueError, FloatingPointError):
        return pearson
    fitted = _logistic4(pred, *b)
    if not np.all(np.isfinite(fitted)) or np.ptp(fitted) == 0:
        return pearson
    increasing = (b[0] - b[1]) / b[3] > 0
    return float(stats.pearsonr(fitted, labels)[0]) * (1 if increasing else -1)
