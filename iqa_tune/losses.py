"""L1 on patch scores plus ``alpha`` x a pairwise hinge ranking loss, at patch or at image granularity.

Patch granularity ranks every pair of patches in a batch whose labels differ (the behaviour the study started
from). Image granularity first averages each image's patch predictions in the batch, then ranks pairs of images,
which is how the test set is scored (SRCC of per-image mean predictions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_mean(values: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``values`` per distinct id in ``groups``; returns (means, ids), ids sorted."""
    ids, inverse = torch.unique(groups, return_inverse=True)
    sums = torch.zeros(len(ids), dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    counts = torch.bincount(inverse, minlength=len(ids)).to(values.dtype)
    return sums / counts, ids


def pairwise_hinge(pred: torch.Tensor, label: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over pairs with label_i > label_j of max(0, margin - (pred_i - pred_j)); 0 when no pair differs.

    ``margin`` is in label units (0-100 for KonIQ's MOS_zscore, 1-5 for MOS).
    """
    better = (label[:, None] - label[None, :]) > 0
    if not bool(better.any()):
        return pred.sum() * 0.0
    gap = pred[:, None] - pred[None, :]
    return F.relu(margin - gap[better]).mean()


def ranking_loss(pred: torch.Tensor, label: torch.Tensor, image_ids: torch.Tensor, margin: float,
                 granularity: str) -> torch.Tensor:
    if granularity == "patch":
        return pairwise_hinge(pred, label, margin)
    img_pred, _ = group_mean(pred, image_ids)
    img_label, _ = group_mean(label, image_ids)  # all patches of an image carry its label
    return pairwise_hinge(img_pred, img_label, margin)


def hyperiqa_loss(pred: torch.Tensor, label: torch.Tensor, image_ids: torch.Tensor, alpha: float,
                  margin: float, granularity: str) -> dict[str, torch.Tensor]:
    """{"loss", "l1", "rank"}; alpha 0 skips the ranking term entirely (plain L1, as in the reference)."""
    l1 = F.l1_loss(pred, label)
    if alpha == 0:
        rank = l1.new_zeros(())
        return {"loss": l1, "l1": l1, "rank": rank}
    rank = ranking_loss(pred, label, image_ids, margin, granularity)
    return {"loss": l1 + alpha * rank, "l1": l1, "rank": rank}
