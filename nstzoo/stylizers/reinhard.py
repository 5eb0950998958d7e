"""``reinhard``: colour statistics transfer (Reinhard et al. 2001), no learned weights.

Each l-alpha-beta channel of the content is shifted and scaled to the style image's mean and
standard deviation. It moves the palette, not the texture: the weakest stylizer in the zoo, and a
useful control for how much of a learned style embedding is colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..hookspecs import hookimpl
from ..nn.color import LabTransform, channel_mean_std
from ..specs import StylizerSpec
from ._controls import check_alpha, style_weights_for, weighted_sum


class Reinhard(nn.Module):
    """Colour transfer in l-alpha-beta space.

    Args:
        strength: 1 transfers the style's statistics fully, 0 returns the content unchanged.
    """

    #: Peak activation bytes per content pixel of one fp32 CPU call (bench/stylize_memory.py --calibrate,
    #: plus ~25 %); the stylize engine plans tiles with it.
    peak_bytes_per_pixel = 160
    #: No convolutions: channels-last only adds layout copies (bench/stylize_speed.py).
    prefer_channels_last = False

    def __init__(self, strength: float = 1.0):
        super().__init__()
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.strength = strength
        self.lab = LabTransform()

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``content [B,3,H,W]``, ``style [B,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1] (float32)."""
        with torch.autocast(content.device.type, enabled=False):
            c_lab = self.lab.to_lab(content.float())
            s_lab = self.lab.to_lab(style.float())
            c_mean, c_std = channel_mean_std(c_lab)
            s_mean, s_std = channel_mean_std(s_lab)
            moved = (c_lab - c_mean) / c_std * s_std + s_mean
            lab = torch.lerp(c_lab, moved, self.strength)
            return self.lab.to_rgb(lab).clamp(0.0, 1.0)

    def stylize_controlled(self, content: torch.Tensor, styles: Sequence[torch.Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None,
                           whole: torch.Tensor | None = None) -> torch.Tensor:
        """``content [B,3,H,W]``, K ``styles [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        ``alpha`` is the strength (the l-alpha-beta lerp); interpolation mixes the styles' channel
        means and standard deviations. The content's own statistics come from ``whole`` when
        ``content`` is a tile, so every tile is moved by the same affine map (no tile-wise tone steps).
        """
        weights = style_weights_for(styles, style_weights)
        alpha = check_alpha(alpha)
        with torch.autocast(content.device.type, enabled=False):
            c_lab = self.lab.to_lab(content.float())
            c_mean, c_std = channel_mean_std(self.lab.to_lab(whole.float()) if whole is not None else c_lab)
            moments = [channel_mean_std(self.lab.to_lab(style.float())) for style in styles]
            s_mean = weighted_sum([m for m, _ in moments], weights)
            s_std = weighted_sum([s for _, s in moments], weights)
            moved = (c_lab - c_mean) / c_std * s_std + s_mean
            return self.lab.to_rgb(torch.lerp(c_lab, moved, alpha)).clamp(0.0, 1.0)


@hookimpl
def register_stylizers(register):
    register(StylizerSpec(
        name="reinhard",
        factory=Reinhard,
        summary="Colour statistics transfer in l-alpha-beta space; no weights",
        paper="Reinhard, Ashikhmin, Gooch, Shirley. Color Transfer between Images. IEEE CG&A 2001",
        needs_weights=False,
        controls=frozenset({"alpha", "style_mix"}),
    ))
