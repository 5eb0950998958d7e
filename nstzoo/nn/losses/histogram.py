"""Differentiable colour-histogram loss (HistoGAN's RGB-uv histogram), used by PAMA and NeAT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

class RGBuvHistogram(nn.Module):
    """HistoGAN's RGB-uv histogram (Afifi et al., CVPR 2021), as PAMA configures it.

    ``forward(images [B,3,H,W] in [0,1]) -> [B,3,bins,bins]``, each sample summing to 1. Images
    larger than ``max_size`` are resized bilinearly to ``max_size x max_size`` first. Pixels vote
    with an inverse-quadratic kernel (width ``sigma``) in log-chroma space over [-3, 3], weighted
    by intensity, so the histogram is differentiable.
    """

    EPS = 1e-6

    def __init__(self, bins: int = 256, max_size: int = 64, sigma: float = 0.02):
        super().__init__()
        self.max_size = max_size
        self.sigma = sigma
        self.register_buffer("centres", torch.linspace(-3.0, 3.0, bins), persistent=False)

    def _kernel(self, values: Tensor) -> Tensor:  # [B,N] -> [B,N,bins]
        return 1.0 / (1.0 + (values.unsqueeze(-1) - self.centres) ** 2 / self.sigma ** 2)

    def forward(self, images: Tensor) -> Tensor:
        x = images.clamp(0.0, 1.0)
        if x.shape[-2] > self.max_size or x.shape[-1] > self.max_size:
            x = F.interpolate(x, size=(self.max_size, self.max_size), mode="bilinear", align_corners=False)
        pixels = x[:, :3].flatten(2)  # [B,3,N]
        intensity = (pixels.pow(2).sum(dim=1) + self.EPS).sqrt()  # [B,N]
        log_rgb = torch.log(pixels + self.EPS)
        planes = []
        for c, (u, v) in enumerate(((1, 2), (0, 2), (0, 1))):
            k_u = self._kernel(log_rgb[:, c] - log_rgb[:, u]) * intensity.unsqueeze(-1)
            k_v = self._kernel(log_rgb[:, c] - log_rgb[:, v])
            planes.append(torch.bmm(k_u.transpose(1, 2), k_v))  # [B,bins,bins]
        hist = torch.stack(planes, dim=1)
        return hist / (hist.sum(dim=(1, 2, 3), keepdim=True) + self.EPS)


def histogram_loss(output: Tensor, style: Tensor, histogram: RGBuvHistogram) -> Tensor:
    """Hellinger-type distance ``(1/sqrt 2) * ||sqrt H_s - sqrt H_o||_2 / B`` of RGB-uv histograms.

    Images ``[B,3,H,W]`` in [0, 1] (sizes may differ). Zero for identical images; grows as the
    output's colours move away from the style's.
    """
    h_out, h_style = histogram(output), histogram(style)
    distance = (h_style.sqrt() - h_out.sqrt()).pow(2).sum()
    return distance.clamp_min(0).sqrt() / (2.0 ** 0.5) / output.shape[0]



__all__ = ["RGBuvHistogram", "histogram_loss"]
