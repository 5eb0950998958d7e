"""``patch-wct``: whitening-colouring transform of local colour patches, no learned weights.

Every k x k RGB patch of the content is a vector of 3k^2 values. Whitening those vectors with the
content's patch covariance and colouring them with the style's patch covariance (plus the style
mean) transfers the style's local second-order statistics: its palette *and* its fine texture
(orientation, frequency and colour co-occurrence up to the patch size). The transformed patches
are overlap-added back into an image. It is the linear, pixel-space ancestor of WCT (Li et al.
2017), which applies the same transform to deep features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..hookspecs import hookimpl
from ..specs import StylizerSpec
from ._controls import check_alpha, style_weights_for


def _patch_covariance(patches: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``patches [B,D,N]`` -> mean ``[B,D,1]`` and covariance ``[B,D,D]`` (+ eps on the diagonal)."""
    mean = patches.mean(dim=2, keepdim=True)
    centred = patches - mean
    cov = centred @ centred.transpose(1, 2) / max(patches.shape[2] - 1, 1)
    return mean, cov + eps * torch.eye(cov.shape[1], dtype=cov.dtype, device=cov.device)


def _matrix_power(cov: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag_embed(values.clamp_min(1e-12).pow(power)) @ vectors.transpose(1, 2)


class PatchWCT(nn.Module):
    """Whitening-colouring transfer of k x k colour patches.

    Args:
        patch_size: k; the largest texture scale transferred, in working-resolution pixels.
        stride: step between content patches (overlap-added; smaller is smoother and slower).
        working_size: the longer side at which patches are processed; larger inputs are stylized at
            this size and the result resized back, so a texture's scale is relative to the image.
        strength: 1 is the full transform, 0 the content.
        eps: covariance regulariser; bounds the whitening gain on flat content.
    """

    #: Peak activation bytes per content pixel of one fp32 CPU call (bench/stylize_memory.py --calibrate,
    #: plus ~25 %); the stylize engine plans tiles with it.
    peak_bytes_per_pixel = 300
    #: No convolutions: channels-last only adds layout copies (bench/stylize_speed.py).
    prefer_channels_last = False

    def __init__(self, patch_size: int = 5, stride: int = 2, working_size: int = 256,
                 strength: float = 1.0, eps: float = 1e-3):
        super().__init__()
        if patch_size < 1 or stride < 1 or stride > patch_size:
            raise ValueError(f"need 1 <= stride <= patch_size, got patch_size={patch_size}, stride={stride}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.patch_size, self.stride, self.working_size = patch_size, stride, working_size
        self.strength, self.eps = strength, eps

    def _resize_longer(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        scale = self.working_size / max(h, w)
        if scale >= 1.0:
            return x
        size = (max(self.patch_size, round(h * scale)), max(self.patch_size, round(w * scale)))
        return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``content [B,3,H,W]``, ``style [B,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1] (float32)."""
        return self._transfer(content, style, self.strength, keep_detail=False)

    def stylize_controlled(self, content: torch.Tensor, styles: Sequence[torch.Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None,
                           whole: torch.Tensor | None = None) -> torch.Tensor:
        """``content [B,3,H,W]``, one ``style [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        ``alpha`` is the strength. Patches are still transformed at ``working_size`` (texture scale is
        relative to the image), but the content's detail finer than the working size is added back
        (``content - upsample(downsample(content))``), so a 4096-px output keeps 4096-px detail instead
        of being an upsampled 256-px image.
        """
        style_weights_for(styles, style_weights)
        if len(styles) != 1:
            raise ValueError("patch-wct takes one style (style_mix is not among its controls)")
        style = styles[0]
        if style.shape[0] != content.shape[0]:
            style = style.expand(content.shape[0], -1, -1, -1)
        return self._transfer(content, style, check_alpha(alpha), keep_detail=True)

    def _transfer(self, content: torch.Tensor, style: torch.Tensor, strength: float,
                  keep_detail: bool) -> torch.Tensor:
        out_size = content.shape[-2:]
        k = self.patch_size
        with torch.autocast(content.device.type, enabled=False):
            c = self._resize_longer(content.float())
            s = self._resize_longer(style.float())
            # Pad so the patch grid covers every pixel; replicate avoids a dark frame.
            h, w = c.shape[-2:]
            pad_h = (-(h - k)) % self.stride
            pad_w = (-(w - k)) % self.stride
            c = F.pad(c, (0, pad_w, 0, pad_h), mode="replicate")
            c_patches = F.unfold(c, k, stride=self.stride).double()                    # [B, 3k^2, N]
            s_patches = F.unfold(s, k, stride=max(self.stride, k // 2 + 1)).double()   # sparser: stats only
            c_mean, c_cov = _patch_covariance(c_patches, self.eps)
            s_mean, s_cov = _patch_covariance(s_patches, self.eps)
            transform = _matrix_power(s_cov, 0.5) @ _matrix_power(c_cov, -0.5)
            moved = (transform @ (c_patches - c_mean) + s_mean).float()
            ones = torch.ones_like(c[:, :1])
            weight = F.fold(F.unfold(ones, k, stride=self.stride), c.shape[-2:], k, stride=self.stride)
            image = F.fold(moved, c.shape[-2:], k, stride=self.stride) / weight.clamp_min(1e-8)
            image = image[..., :h, :w]
            if image.shape[-2:] == out_size:
                return torch.lerp(c[..., :h, :w], image, strength).clamp(0.0, 1.0)
            base = content.float()
            if keep_detail:
                # up(image) + (content - up(c)): the content's detail above the working size is kept.
                # Interpolation is linear, so that is content + up(image - c): one full-size resize.
                change = F.interpolate(image - c[..., :h, :w], size=out_size, mode="bilinear", align_corners=False)
                return torch.add(base, change, alpha=strength).clamp(0.0, 1.0)
            image = F.interpolate(image, size=out_size, mode="bilinear", align_corners=False)
            return torch.lerp(base, image, strength).clamp(0.0, 1.0)


@hookimpl
def register_stylizers(register):
    register(StylizerSpec(
        name="patch-wct",
        factory=PatchWCT,
        summary="Whitening-colouring transform of local colour patches (palette + fine texture); no weights",
        paper="Pixel-space patch variant of Li et al., Universal Style Transfer via Feature Transforms, NeurIPS 2017",
        needs_weights=False,
        controls=frozenset({"alpha"}),
    ))
