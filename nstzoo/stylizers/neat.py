"""NeAT — a re-implementation from the papers; no official code or weights exist.

Ruta et al., "NeAT: Neural Artistic Tracing for Beautiful Style Transfer" (2023), as described in
the ALADIN-NST paper (§2) and the NeAT abstract: stylization as *editing* — the network predicts
a delta that is added to a (training-time) corrupted copy of the content image — with an expanded
PAMA-style attentional alignment on VGG features, contrastive losses with projection heads, a
patch discriminator on Sobel-selected edge patches (against "style halos") and Gatys identity
losses. Everything not stated there (which levels, how many stages, how the levels are fused,
loss weights) is nstzoo's choice, documented here and configurable. Weights come only from
``nstzoo stylizers train neat``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..nn.attention import AlignmentStage
from ..nn.decoder import adain_decoder
from ..nn.sizing import attention_working_size, pad_to_multiple, resize_to
from ..nn.vgg import NormalisedVGG19
from ..specs import StylizerSpec

PAPER = ("Dan Ruta, Andrew Gilbert, John Collomosse, Eli Shechtman, Nicholas Kolkin. NeAT: Neural Artistic "
         "Tracing for Beautiful Style Transfer. 2023 (re-implemented by nstzoo from the paper descriptions)")
WEIGHTS_SOURCE = ("no official NeAT code or weights are published; train them with "
                  "`nstzoo stylizers train neat` (this plugin is a re-implementation)")
LEVEL_CHANNELS = {"relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
DEFAULT_LEVELS = ("relu3_1", "relu4_1", "relu5_1")
DEFAULT_MAX_TOKENS = 4096


def gaussian_blur(images: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
    """Blur each image ``[B,C,H,W]`` with its own Gaussian ``sigma`` ``[B]`` (0 = unchanged).

    One separable kernel size, set by ``max_sigma``, serves the whole batch, so the strengths are
    applied without leaving the device.
    """
    radius = max(1, math.ceil(3.0 * max_sigma))
    b, c, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    sigma = sigma.to(images).clamp_min(1e-3).view(b, 1)
    kernel = torch.exp(-offsets.view(1, -1) ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C,K]
    x = images.reshape(1, b * c, h, w)
    mode = "reflect" if radius < min(h, w) else "replicate"
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), kernel.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode=mode), kernel.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, h, w)


class NeATStylizer(nn.Module):
    """NeAT (nstzoo re-implementation): ``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1]
    -> ``[B,3,H,W]`` in [0, 1], computed as ``clamp(base + delta)``.

    Architecture (nstzoo's choices, see the module docstring):

    - VGG features at ``levels`` (any of relu3_1, relu4_1, relu5_1; relu4_1 is required);
    - at relu4_1 ``stages`` PAMA alignment stages (default 3, as PAMA), one stage at each other level;
    - aligned relu5_1 is upsampled, added to aligned relu4_1 and mixed by a 3x3 conv (``merge5``);
      the AdaIN decoder's first block brings it to relu3_1 scale, where aligned relu3_1 is added
      and mixed (``merge3``); the rest of the decoder outputs the 3-channel ``delta`` (no activation).

    ``base`` is the content itself at inference ("prior blurring disabled for speed", as ALADIN-NST
    runs NeAT), or a Gaussian blur of it when ``inference_blur_sigma > 0``; training blurs with a
    random strength per image and the network sees the same corrupted image it edits.

    High resolution: the delta is predicted at a working size whose finest attention level has at
    most ``max_tokens`` positions (stride 4 with relu3_1, else 8), resized bilinearly to ``H x W``,
    and added to the full-resolution base — detail of the content is never resampled.
    """

    def __init__(self, levels: tuple[str, ...] | list[str] = DEFAULT_LEVELS, stages: int = 3,
                 max_tokens: int = DEFAULT_MAX_TOKENS, inference_blur_sigma: float = 0.0):
        super().__init__()
        levels = tuple(levels)
        unknown = [lv for lv in levels if lv not in LEVEL_CHANNELS]
        if unknown or "relu4_1" not in levels or len(set(levels)) != len(levels):
            raise ConfigError(f"neat: option levels must be distinct names from {', '.join(LEVEL_CHANNELS)} "
                              f"including relu4_1, got {list(levels)!r}")
        if int(stages) < 1 or int(max_tokens) < 1 or float(inference_blur_sigma) < 0:
            raise ConfigError(f"neat: stages and max_tokens must be >= 1 and inference_blur_sigma >= 0, got "
                              f"stages={stages!r}, max_tokens={max_tokens!r}, "
                              f"inference_blur_sigma={inference_blur_sigma!r}")
        self.levels = tuple(lv for lv in LEVEL_CHANNELS if lv in levels)  # shallow to deep
        self.stages = int(stages)
        self.max_tokens = int(max_tokens)
        self.inference_blur_sigma = float(inference_blur_sigma)
        self.encoder = NormalisedVGG19(self.levels[-1])
        self.align = nn.ModuleDict({
            lv: nn.ModuleList(AlignmentStage(LEVEL_CHANNELS[lv]) for _ in range(self.stages if lv == "relu4_1" else 1))
            for lv in self.levels})
        self.pad = nn.ReflectionPad2d(1)
        if "relu5_1" in self.levels:
            self.merge5 = nn.Conv2d(512, 512, 3)
        if "relu3_1" in self.levels:
            self.merge3 = nn.Conv2d(256, 256, 3)
        self.decoder = adain_decoder()
        self.stride = 4 if "relu3_1" in self.levels else 8

    def predict_delta(self, base: Tensor, style: Tensor) -> Tensor:
        """``delta`` ``[B,3,H,W]`` for a base whose sides are multiples of 16 (no resizing, no clamp)."""
        content_feats = dict(zip(self.levels, self.encoder.taps(base, self.levels)))
        style_feats = dict(zip(self.levels, self.encoder.taps(style, self.levels)))
        aligned = {}
        for level in self.levels:
            feat = content_feats[level]
            for stage in self.align[level]:
                feat = stage(feat, style_feats[level])
            aligned[level] = feat
        feat = aligned["relu4_1"]
        if "relu5_1" in aligned:
            feat = self.merge5(self.pad(feat + F.interpolate(aligned["relu5_1"], scale_factor=2, mode="nearest")))
        feat = self.decoder[:4](feat)  # 512 -> 256 channels, x2: relu3_1 scale
        if "relu3_1" in aligned:
            feat = F.relu(self.merge3(self.pad(feat + aligned["relu3_1"])))
        return self.decoder[4:](feat)

    def edit(self, base: Tensor, style: Tensor) -> Tensor:
        """``base + delta`` (unclamped) for a base ``[B,3,H,W]`` with sides multiples of 16; used in training."""
        return base + self.predict_delta(base, style)

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        h, w = content.shape[-2:]
        base = content
        if self.inference_blur_sigma > 0:
            sigma = content.new_full((content.shape[0],), self.inference_blur_sigma)
            base = gaussian_blur(content, sigma, self.inference_blur_sigma)
        style = resize_to(style, attention_working_size(*style.shape[-2:], self.max_tokens, self.stride))
        work = attention_working_size(h, w, self.max_tokens, self.stride)
        padded, (wh, ww) = pad_to_multiple(resize_to(base, work), 16)
        delta = self.predict_delta(padded, style)[..., :wh, :ww]
        return (base + resize_to(delta, (h, w))).clamp(0.0, 1.0)


def _train(config: dict[str, Any]) -> Path:
    from ..stylizer_training import train_stylizer

    return train_stylizer("neat", config)


SPEC = StylizerSpec(
    name="neat",
    factory=NeATStylizer,
    summary="NeAT (nstzoo re-implementation from the papers): multi-level PAMA-style alignment predicting "
            "an edit (delta) of the content image",
    paper=PAPER,
    weight_files=(),
    import_official=None,
    needs_weights=True,
    default_options={"levels": list(DEFAULT_LEVELS), "stages": 3, "max_tokens": DEFAULT_MAX_TOKENS,
                     "inference_blur_sigma": 0.0},
    train=_train,
    weights_source=WEIGHTS_SOURCE,
)


@hookimpl
def register_stylizers(register: Any) -> None:
    register(SPEC)


__all__ = ["NeATStylizer", "gaussian_blur", "SPEC", "register_stylizers"]
