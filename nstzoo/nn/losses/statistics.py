"""Feature-statistics losses shared by the VGG-family recipes (AdaIN, SANet, PAMA, NeAT).

Feature maps are ``[B,C,H,W]``; every loss returns a scalar averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..stats import mean_std


def flatten_spatial(feat: Tensor) -> Tensor:
    return feat.reshape(feat.shape[0], feat.shape[1], -1)



def mean_std_loss(feats: list[Tensor], targets: list[Tensor]) -> Tensor:
    """AdaIN's style loss: sum over layers of the MSE of channel means plus the MSE of channel stds."""
    loss = feats[0].new_zeros(())
    for feat, target in zip(feats, targets, strict=True):
        (m1, s1), (m2, s2) = mean_std(feat), mean_std(target)
        loss = loss + F.mse_loss(m1, m2) + F.mse_loss(s1, s2)
    return loss


def mse_feature_loss(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Sum over layers of the MSE between matching feature maps."""
    return sum((F.mse_loss(x, y) for x, y in zip(a, b, strict=True)), torch.zeros(()))


def gram_matrix(feat: Tensor) -> Tensor:
    """``[B,C,H,W] -> [B,C,C]``, normalised by ``C*H*W`` so layers are comparable."""
    flat = flatten_spatial(feat)
    return torch.bmm(flat, flat.transpose(1, 2)) / flat.shape[1] / flat.shape[2]


def gram_loss(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Gatys style distance: sum over layers of the MSE between Gram matrices (zero for equal inputs)."""
    return sum((F.mse_loss(gram_matrix(x), gram_matrix(y)) for x, y in zip(a, b, strict=True)), torch.zeros(()))


def style_descriptor(feats: list[Tensor]) -> Tensor:
    """Per-channel mean and std of each feature map, concatenated: ``[B, 2 * sum(C)]``."""
    parts = []
    for feat in feats:
        mean, std = mean_std(feat)
        parts += [mean.flatten(1), std.flatten(1)]
    return torch.cat(parts, dim=1)



__all__ = ["flatten_spatial", "mean_std_loss", "mse_feature_loss", "gram_matrix", "gram_loss", "style_descriptor"]
