"""PAMA's manifold-alignment training losses (Luo et al., ACCV 2022), shared by PAMA and NeAT.

Feature losses take VGG feature maps ``[B,C,H,W]``; image losses take images ``[B,3,H,W]`` in
[0, 1]. Every loss returns a scalar tensor averaged over the batch. From the paper and the public
luoxuan-cs/PAMA code:

- :func:`self_similarity_loss`: content structure as cosine self-distance matrices (STROTSS style).
- :func:`relaxed_emd_loss`: relaxed earth mover's distance between output and style features.
- :func:`moment_loss`: first and second moments (mean and channel covariance).
- :func:`pama_stage_loss`: one stage's weighted terms, with the colour histogram of
  :mod:`nstzoo.nn.losses.histogram`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .histogram import RGBuvHistogram, histogram_loss
from .statistics import flatten_spatial

# PAMA stage weights (main.py defaults): content (self-similarity), REMD, moment, colour.
PAMA_STAGE_WEIGHTS: tuple[dict[str, float], ...] = (
    {"content": 12.0, "remd": 2.0, "moment": 2.0, "color": 0.25},
    {"content": 9.0, "remd": 2.0, "moment": 2.0, "color": 0.5},
    {"content": 7.0, "remd": 2.0, "moment": 2.0, "color": 1.0},
)
PAMA_LOSS_LAYERS = ("relu3_1", "relu4_1", "relu5_1")

# Reconstruction: 0.5 * feature MSE per layer and image, 25 * pixel MSE per image.
RECONSTRUCTION_FEATURE_WEIGHT = 0.5
RECONSTRUCTION_PIXEL_WEIGHT = 25.0


def cosine_distance_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - cos`` between every position of ``a`` ``[B,C,N...]`` and of ``b`` ``[B,C,M...]`` -> ``[B,N,M]``."""
    a = F.normalize(flatten_spatial(a), dim=1, eps=eps)
    b = F.normalize(flatten_spatial(b), dim=1, eps=eps)
    return 1.0 - torch.bmm(a.transpose(1, 2), b)


def self_similarity_loss(output_feat: Tensor, content_feat: Tensor) -> Tensor:
    """Mean absolute difference of the two maps' cosine self-distance matrices.

    Both ``[B,C,H,W]`` of the same size. Zero when the features are equal, and unchanged by a
    positive global scale of either map (cosine distances ignore magnitude).
    """
    if output_feat.shape != content_feat.shape:
        raise ValueError(f"self_similarity_loss: shapes differ, {tuple(output_feat.shape)} vs "
                         f"{tuple(content_feat.shape)}")
    return (cosine_distance_matrix(output_feat, output_feat)
            - cosine_distance_matrix(content_feat, content_feat)).abs().mean()


def relaxed_emd_loss(output_feat: Tensor, style_feat: Tensor) -> Tensor:
    """Relaxed EMD with cosine cost: ``max(mean_i min_j C_ij, mean_j min_i C_ij)``.

    ``output_feat`` ``[B,C,H,W]`` and ``style_feat`` ``[B,C,H',W']`` may differ in size. Zero when
    every output feature has an identical style feature and vice versa (e.g. identical sets).
    """
    cost = cosine_distance_matrix(output_feat, style_feat)  # [B,N,M]
    return torch.maximum(cost.min(dim=2).values.mean(), cost.min(dim=1).values.mean())


def moment_loss(output_feat: Tensor, style_feat: Tensor) -> Tensor:
    """L1 distance of per-channel means plus L1 distance of ``C x C`` covariances over positions.

    Note: the reference code averages over the *channel* axis before centring; here the mean is
    taken over positions (the first moment the paper describes), which also lets output and style
    differ in size.
    """
    a, b = flatten_spatial(output_feat), flatten_spatial(style_feat)
    mu_a, mu_b = a.mean(dim=2, keepdim=True), b.mean(dim=2, keepdim=True)
    a_c, b_c = a - mu_a, b - mu_b
    cov_a = torch.bmm(a_c, a_c.transpose(1, 2)) / max(a.shape[2] - 1, 1)
    cov_b = torch.bmm(b_c, b_c.transpose(1, 2)) / max(b.shape[2] - 1, 1)
    return (mu_a - mu_b).abs().mean() + (cov_a - cov_b).abs().mean()


def pama_stage_loss(output_feats: list[Tensor], content_feats: list[Tensor], style_feats: list[Tensor],
                    output: Tensor, style: Tensor, weights: dict[str, float],
                    histogram: RGBuvHistogram | None) -> dict[str, Tensor]:
    """One PAMA stage's terms (already weighted) and their normalised sum under ``"total"``.

    Features are lists over :data:`PAMA_LOSS_LAYERS`; ``output``/``style`` are images in [0, 1].
    ``histogram=None`` turns the colour term off (PAMA's "without colour" release).
    """
    terms = {
        "content": weights["content"] * sum(self_similarity_loss(o, c) for o, c in zip(output_feats, content_feats)),
        "remd": weights["remd"] * sum(relaxed_emd_loss(o, s) for o, s in zip(output_feats, style_feats)),
        "moment": weights["moment"] * sum(moment_loss(o, s) for o, s in zip(output_feats, style_feats)),
    }
    used = ["content", "remd", "moment"]
    if histogram is not None:
        terms["color"] = weights["color"] * histogram_loss(output, style, histogram)
        used.append("color")
    terms["total"] = sum(terms[k] for k in used) / sum(weights[k] for k in used)
    return terms



__all__ = ["PAMA_STAGE_WEIGHTS", "PAMA_LOSS_LAYERS", "RECONSTRUCTION_FEATURE_WEIGHT", "RECONSTRUCTION_PIXEL_WEIGHT",
           "cosine_distance_matrix", "self_similarity_loss", "relaxed_emd_loss", "moment_loss", "pama_stage_loss"]
