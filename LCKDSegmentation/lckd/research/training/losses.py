"""The LCKD loss: soft Dice + BCE on the three regions, cross-modal distillation, bottleneck supervision."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per region channel (over the batch and all voxels), averaged over channels.

    Pooling the batch keeps the loss defined when a crop holds no tumour; `smooth` makes an
    empty prediction of an empty region score (almost) perfectly.
    """
    p = torch.sigmoid(logits.float())
    dims = (0,) + tuple(range(2, p.dim()))
    inter = (p * target).sum(dims)
    denom = p.sum(dims) + target.sum(dims)
    return (1 - (2 * inter + smooth) / (denom + smooth)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice + binary cross-entropy on the sigmoid region outputs (ET, TC, WT)."""
    return soft_dice_loss(logits, target) + F.binary_cross_entropy_with_logits(logits.float(), target)


def distillation_loss(features: torch.Tensor, present: torch.Tensor, teachers: Sequence[int]) -> torch.Tensor:
    """L1 between each present teacher's detached bottleneck and every other present modality's.

    features: (B, M, C, d, h, w) (zeros where absent); present: (B, M) bool; teachers:
    modality indices. Pairs are formed within a sample only (a batch may mix subsets); the
    teacher side is detached, so the gradient reaches the students alone. As in the
    authors' code, the pair terms (each a mean absolute difference) are summed, so a sample
    with more students gets more distillation; the sum is averaged over the batch. Returns
    0 (with a graph) when no sample has a teacher and another modality present.
    """
    terms = []
    for b in range(features.shape[0]):
        pres = present[b].nonzero().flatten().tolist()
        for t in teachers:
            if t not in pres:
                continue
            target = features[b, t].detach()
            for s in pres:
                if s != t:
                    terms.append((features[b, s] - target).abs().mean())
    if not terms:
        return features.sum() * 0.0
    return torch.stack(terms).sum() / features.shape[0]


def bottleneck_loss(coarse_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Segmentation loss of the bottleneck head against the regions' fraction in each coarse voxel.

    The target is the average of the full-resolution masks over each bottleneck voxel's
    footprint (a soft label in [0, 1]), so a voxel half filled with tumour asks for 0.5.
    """
    d, h, w = coarse_logits.shape[2:]
    soft = F.adaptive_avg_pool3d(target.float(), (d, h, w))
    return segmentation_loss(coarse_logits, soft)


def lckd_loss(logits: torch.Tensor, target: torch.Tensor, features: torch.Tensor, present: torch.Tensor,
              teachers: Sequence[int], kd_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, segmentation, distillation) with total = segmentation + kd_weight x distillation."""
    seg = segmentation_loss(logits, target)
    kd = distillation_loss(features, present, teachers) if kd_weight > 0 else seg.new_zeros(())
    return seg + kd_weight * kd, seg, kd
