"""The first four per-channel moments of feature maps (ALADIN-NST §3.1, eqs. 1-3).

For each sample and channel of ``x [B,C,H,W]``, over the ``N = H*W`` spatial positions::

    mean  mu = sum(x) / N
    std   sigma = sqrt(sum((x - mu)^2) / N)        population (biased) estimator, see below
    z     = (x - mu) / sigma                        eq. 1
    skew  m3 = sum(z^3) / N                         eq. 2
    kurt  m4 = sum(z^4) / N - 3                     eq. 3, excess kurtosis (0 for a Gaussian)

Choices (the paper does not state them):

- **Population std** (divide by N). Eqs. 2-3 divide by N, and standardising with the population
  sigma makes m3/m4 exactly ``scipy.stats.skew`` / ``kurtosis(fisher=True, bias=True)``; it is also
  defined for a 1x1 map. (This differs from :func:`nstzoo.nn.stats.mean_std`, which copies AdaIN's
  unbiased variance; the difference is a factor sqrt(N/(N-1)), irrelevant at feature-map sizes.)
- **Constant channels.** ReLU features are often exactly zero over a whole map (dead channels,
  above all at relu5_1). Their shape is undefined (0/0). Such a channel reports std 0, skewness 0
  and excess kurtosis 0 — the "no shape information" values of a Gaussian — rather than -3, which
  lies outside the range any real distribution reaches (excess kurtosis >= -2) and would make dead
  channels look like an extreme shape. A channel counts as constant when
  ``sigma <= eps * (1 + |mu|)``: below that, float32 rounding in ``x - mu`` is of the same order as
  the spread itself, so the standardised moments would be noise. The guard keeps values and
  gradients finite (no 1/0 reaches autograd).
- **Float32 always.** Under bf16/fp16 autocast the features arrive in half precision; powers up to 4
  and sums over 65k positions are done in float32 with autocast disabled, and float32 is returned.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Moments(NamedTuple):
    """Four ``[B,C]`` float32 tensors: mean, std, skewness, excess kurtosis."""

    mean: Tensor
    std: Tensor
    skew: Tensor
    kurt: Tensor


def channel_moments(x: Tensor, eps: float = 1e-5) -> Moments:
    """Mean, population std, skewness and excess kurtosis of every channel of ``x``.

    Args:
        x: features ``[B,C,H,W]`` of any float dtype and memory format (channels_last is fine: the
            reductions run over dims (2, 3) without reshaping).
        eps: relative tolerance below which a channel is treated as constant (see module docstring).

    Returns:
        :class:`Moments` of four float32 ``[B,C]`` tensors, finite for any finite input.
    """
    if x.dim() != 4:
        raise ValueError(f"channel_moments expects [B,C,H,W] features, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"channel_moments expects floating-point features, got {x.dtype}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x if x.dtype == torch.float64 else x.float()  # float64 kept for gradcheck
        mean = x.mean(dim=(2, 3), keepdim=True)
        d = x - mean
        var = d.square().mean(dim=(2, 3), keepdim=True)
        constant = (var <= (eps * (1.0 + mean.abs())) ** 2).detach()
        # Swap the variance to 1 *before* sqrt and division: torch.where passes 0 * inf = NaN back
        # through the branch it did not select, so no 1/0 or sqrt'(0) may be computed at all.
        safe_std = torch.where(constant, torch.ones_like(var), var).sqrt()
        inv = torch.where(constant, torch.zeros_like(var), safe_std.reciprocal())
        z = d * inv
        z2 = z.square()
        skew = (z2 * z).mean(dim=(2, 3))
        kurt = z2.square().mean(dim=(2, 3))
        constant = constant.flatten(1)
        kurt = torch.where(constant, torch.zeros_like(kurt), kurt - 3.0)
        std = torch.where(constant, torch.zeros_like(kurt), safe_std.flatten(1))
        return Moments(mean.flatten(1), std, skew, kurt)


def feature_moments(x: Tensor, eps: float = 1e-5) -> Tensor:
    """:func:`channel_moments` concatenated moment-major: ``[B, 4C]`` float32.

    Layout: ``[mean_0..mean_{C-1}, std_0.., skew_0.., kurt_0..]``.
    """
    return torch.cat(channel_moments(x, eps), dim=1)


__all__ = ["Moments", "channel_moments", "feature_moments"]
