"""Per-channel feature moments and the normalisations built on them.

All functions take feature maps ``[B,C,H,W]`` and work per sample and channel over H*W, exactly as
the ``calc_mean_std`` of the AdaIN, SANet, PAMA and CAST code bases: unbiased variance, ``eps``
added to the variance before the square root.
"""

from __future__ import annotations

from torch import Tensor


def mean_std(feat: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation over H*W, each ``[B,C,1,1]``.

    The variance is unbiased (``N-1``) like the originals; a 1x1 map, where that is undefined,
    falls back to the biased estimator (0) instead of producing NaN.
    """
    if feat.dim() != 4:
        raise ValueError(f"mean_std expects [B,C,H,W] features, got shape {tuple(feat.shape)}")
    b, c = feat.shape[:2]
    flat = feat.reshape(b, c, -1)
    correction = 1 if flat.shape[-1] > 1 else 0
    var = flat.var(dim=2, correction=correction) + eps
    return flat.mean(dim=2).view(b, c, 1, 1), var.sqrt().view(b, c, 1, 1)


def mean_variance_norm(feat: Tensor) -> Tensor:
    """``(feat - mean) / std`` per sample and channel; same shape as ``feat``."""
    mean, std = mean_std(feat)
    return (feat - mean) / std


def adain(content_feat: Tensor, style_feat: Tensor) -> Tensor:
    """Adaptive instance normalisation: content ``[B,C,H,W]`` re-scaled to the style's moments.

    ``style_feat`` is ``[B,C,H',W']``; the spatial sizes may differ. Returns ``[B,C,H,W]``.
    """
    if content_feat.shape[:2] != style_feat.shape[:2]:
        raise ValueError(f"adain: content {tuple(content_feat.shape)} and style {tuple(style_feat.shape)} "
                         "must agree in batch and channels")
    style_mean, style_std = mean_std(style_feat)
    return mean_variance_norm(content_feat) * style_std + style_mean


__all__ = ["mean_std", "mean_variance_norm", "adain"]
