"""The PAMA alignment stage (Luo et al., "Progressive Attentional Manifold Alignment", ACCV 2022).

One stage re-arranges content features by attention over style features, then gates between the
content and the attended features. PAMA stacks three stages at relu4_1; NeAT (re-implemented in
:mod:`nstzoo.stylizers.neat`) uses the same stage at several VGG levels.

Submodule names follow the official ``PAMA1.pth`` key layout (``conv_in``, ``attn.f`` ...,
``fuse.proj1`` ..., ``conv_out``), so official blocks load without renaming.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .stats import mean_variance_norm


def _reflect_safe_pad(x: Tensor, pad: nn.ReflectionPad2d) -> Tensor:
    # Reflection needs a side longer than the pad; a 1-2 px feature map (a tiny image at relu5_1)
    # falls back to replication so that any input size works.
    p = pad.padding[0]
    if min(x.shape[-2:]) > p:
        return pad(x)
    return nn.functional.pad(x, (p, p, p, p), mode="replicate")


class AttentionUnit(nn.Module):
    """Attention of content positions over style positions, in a ``channels // 2`` projection.

    ``forward(content [B,C,Hc,Wc], style [B or 1,C,Hs,Ws]) -> [B,C,Hc,Wc]``. Query and key see
    mean-variance-normalised features, the value sees the raw style; the map ``[B,Hc*Wc,Hs*Ws]``
    is softmax-normalised over style positions. ReLU6 after every projection, no residual.
    """

    def __init__(self, channels: int = 512):
        super().__init__()
        hidden = channels // 2
        self.relu6 = nn.ReLU6()
        self.f = nn.Conv2d(channels, hidden, 1)
        self.g = nn.Conv2d(channels, hidden, 1)
        self.h = nn.Conv2d(channels, hidden, 1)
        self.out_conv = nn.Conv2d(hidden, channels, 1)

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        b, _, hc, wc = content.shape
        query = self.relu6(self.f(mean_variance_norm(content))).flatten(2).transpose(1, 2)  # [B,Nc,C/2]
        key = self.relu6(self.g(mean_variance_norm(style))).flatten(2).transpose(1, 2)  # [Bs,Ns,C/2]
        value = self.relu6(self.h(style)).flatten(2).transpose(1, 2)  # [Bs,Ns,C/2]
        if key.shape[0] != b:  # one style for a batch of contents (tiles, frames): broadcast, no copy
            key, value = key.expand(b, -1, -1), value.expand(b, -1, -1)
        # softmax(Q K^T) V over style positions, unscaled (scale=1) as in the reference, by the fused
        # kernel: the [B,Nc,Ns] map is never materialised (memory O(Nc*C), not O(Nc*Ns)); fp32 results
        # differ from bmm + softmax + bmm by summation order only (~1e-7).
        out = nn.functional.scaled_dot_product_attention(query[:, None], key[:, None], value[:, None], scale=1.0)
        out = out[:, 0].transpose(1, 2).reshape(b, -1, hc, wc)
        return self.relu6(self.out_conv(out))


class FuseUnit(nn.Module):
    """Per-position gate between content ``x`` and aligned ``y`` (both ``[B,C,H,W]``) -> ``[B,C,H,W]``.

    The gate is the mean of three sigmoids (1x1, 3x3 and 5x5 convolutions of a joint projection),
    so each position decides how much of the re-arranged style features replaces the content.
    """

    def __init__(self, channels: int = 512):
        super().__init__()
        self.proj1 = nn.Conv2d(2 * channels, channels, 1)
        self.proj2 = nn.Conv2d(channels, channels, 1)
        self.proj3 = nn.Conv2d(channels, channels, 1)
        self.fuse1x = nn.Conv2d(channels, 1, 1)
        self.fuse3x = nn.Conv2d(channels, 1, 3)
        self.fuse5x = nn.Conv2d(channels, 1, 5)
        self.pad3x = nn.ReflectionPad2d(1)
        self.pad5x = nn.ReflectionPad2d(2)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        joint = self.proj1(torch.cat([x, y], dim=1))
        gate = (self.sigmoid(self.fuse1x(joint)) + self.sigmoid(self.fuse3x(_reflect_safe_pad(joint, self.pad3x)))
                + self.sigmoid(self.fuse5x(_reflect_safe_pad(joint, self.pad5x)))) / 3.0
        return gate.clamp(0.0, 1.0) * self.proj2(x) + (1.0 - gate).clamp(0.0, 1.0) * self.proj3(y)


class AlignmentStage(nn.Module):
    """One PAMA stage: ``conv_in`` -> attention -> ``conv_out`` -> gated fusion.

    ``forward(content [B,C,Hc,Wc], style [B,C,Hs,Ws]) -> [B,C,Hc,Wc]``. ``conv_in`` (shared by
    content and style) and ``conv_out`` are 3x3 with reflection padding and ReLU6. Keys match the
    official ``PAMA{1,2,3}.pth``; 6,313,219 parameters at 512 channels.
    """

    def __init__(self, channels: int = 512):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 3)
        self.attn = AttentionUnit(channels)
        self.fuse = FuseUnit(channels)
        self.conv_out = nn.Conv2d(channels, channels, 3)
        self.pad = nn.ReflectionPad2d(1)
        self.relu6 = nn.ReLU6()

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        x = self.relu6(self.conv_in(_reflect_safe_pad(content, self.pad)))
        s = self.relu6(self.conv_in(_reflect_safe_pad(style, self.pad)))
        y = self.relu6(self.conv_out(_reflect_safe_pad(self.attn(x, s), self.pad)))
        return self.fuse(x, y)


def alignment_stage_keys(prefix: str = "") -> list[str]:
    """The 24 keys of one official ``PAMA{k}.pth`` file, optionally prefixed."""
    return [prefix + k for k in AlignmentStage(8).state_dict()]


__all__ = ["AttentionUnit", "FuseUnit", "AlignmentStage", "alignment_stage_keys"]
