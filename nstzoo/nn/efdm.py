"""Exact feature distribution matching (EFDM) by Sort-Matching.

Zhang, Li, Li, Jia, Zhang, "Exact Feature Distribution Matching for Arbitrary Style Transfer and
Domain Generalization", CVPR 2022 (arXiv:2203.07740), code YBZh/EFDM. Where AdaIN matches only
each channel's mean and standard deviation, EFDM matches its whole empirical distribution: every
content value is replaced by the style value of the same rank, so the result has exactly the
style's values (its empirical CDF) arranged in the content's order.

Unequal sizes: the released ``exact_feature_distribution_matching`` asserts
``content.size() == style.size()`` (its test script resizes and centre-crops both images to the
same square). Here the style's sorted values — its empirical quantile function — are linearly
resampled to the content's count (``align_corners=True``, so the minimum and maximum are kept
exactly); with equal counts nothing is resampled and the released result is reproduced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sorted_quantiles(values: Tensor, count: int) -> Tensor:
    """Each row's sorted values, resampled to ``count`` entries.

    Args:
        values: ``[B,C,N]`` (any order).
        count: how many quantiles to return (>= 1).

    Returns:
        ``[B,C,count]``, ascending along the last axis. With ``count == N`` these are exactly the
        sorted values; otherwise position ``i`` holds the linear interpolation of the sorted values
        at fractional rank ``i * (N-1) / (count-1)`` (the first entry when ``count == 1``).
    """
    if values.dim() != 3:
        raise ValueError(f"sorted_quantiles expects [B,C,N] values, got shape {tuple(values.shape)}")
    if count < 1:
        raise ValueError(f"sorted_quantiles: count must be >= 1, got {count}")
    # A stable sort fixes the order of ties (ReLU features hold many exact zeros), so a result never
    # depends on the sort kernel or on the other items of a batch.
    ordered = torch.sort(values, dim=-1, stable=True).values
    if ordered.shape[-1] == count:
        return ordered
    # Interpolating the quantile function keeps it monotone, so the result stays sorted.
    return F.interpolate(ordered, size=count, mode="linear", align_corners=True)


def exact_feature_distribution_matching(content_feat: Tensor, style_feat: Tensor) -> Tensor:
    """Sort-Matching EFDM: content ``[B,C,H,W]``, style ``[B,C,H',W']`` -> ``[B,C,H,W]``.

    Per sample and channel, the content position of rank ``k`` gets the style's ``k``-th smallest
    value (see :func:`sorted_quantiles` when ``H*W != H'*W'``). Ties among content values are
    ranked by position (stable sort).

    Gradients follow the released code, ``x + (target - x.detach())``: the content receives the
    incoming gradient unchanged (identity, the paper's straight-through treatment of the
    non-differentiable rank assignment), and the style receives it at the positions whose values
    were assigned (through the sort and, for unequal sizes, the interpolation weights).
    """
    if content_feat.dim() != 4 or style_feat.dim() != 4:
        raise ValueError(f"efdm expects [B,C,H,W] features, got {tuple(content_feat.shape)} and "
                         f"{tuple(style_feat.shape)}")
    if content_feat.shape[:2] != style_feat.shape[:2]:
        raise ValueError(f"efdm: content {tuple(content_feat.shape)} and style {tuple(style_feat.shape)} "
                         "must agree in batch and channels")
    b, c = content_feat.shape[:2]
    content = content_feat.reshape(b, c, -1)
    order = torch.sort(content, dim=-1, stable=True).indices  # order[k] = position of rank k
    quantiles = sorted_quantiles(style_feat.reshape(b, c, -1), content.shape[-1])
    # Scattering the k-th quantile to the position of rank k equals the released
    # ``value_style.gather(-1, order.argsort(-1))`` without a second sort.
    matched = torch.zeros_like(content).scatter(-1, order, quantiles.to(content.dtype))
    # ``content - content.detach()`` is exactly zero but carries the identity gradient; written this
    # way round (not the released ``content + (matched - content.detach())``) the values are the
    # style's values bit for bit instead of up to one rounding.
    return (matched + (content - content.detach())).view_as(content_feat)


__all__ = ["sorted_quantiles", "exact_feature_distribution_matching"]
