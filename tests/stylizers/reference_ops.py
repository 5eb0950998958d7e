"""Plain-torch re-implementations of the released networks, driven by raw official-layout tensors.

Parity tests compare the imported stylizers against these, so they deliberately share no code with
``nstzoo.nn``: layers are written as functional ops keyed by the official checkpoint names.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

State = Mapping[str, Tensor]

# The released VGG slices [:4] [4:11] [11:18] [18:31] [31:44] as (conv slot | "pool") programs; the
# first slice starts with the 1x1 slot-0 conv (no padding), every 3x3 conv is reflection-padded + ReLU.
VGG_STAGES = ([2], [5, "pool", 9], [12, "pool", 16], [19, 22, 25, "pool", 29], [32, 35, 38, "pool", 42])


def conv(x: Tensor, state: State, name: str, pad: int = 1) -> Tensor:
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"])


def vgg_relus(vgg: State, image: Tensor, stages: int = 5) -> list[Tensor]:
    """relu1_1 ... relu{stages}_1 of the 53-slot ``vgg_normalised.pth`` for RGB in [0, 1]."""
    x = conv(image, vgg, "0", pad=0)
    out = []
    for program in VGG_STAGES[:stages]:
        for op in program:
            x = F.max_pool2d(x, 2, 2, ceil_mode=True) if op == "pool" else F.relu(conv(x, vgg, str(op)))
        out.append(x)
    return out


def calc_mean_std(feat: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """The released ``calc_mean_std``: unbiased variance + eps, per sample and channel."""
    n, c = feat.shape[:2]
    var = feat.reshape(n, c, -1).var(dim=2) + eps
    return feat.reshape(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def mean_variance_norm(feat: Tensor) -> Tensor:
    mean, std = calc_mean_std(feat)
    return (feat - mean) / std


def adain_decoder(state: State, feat: Tensor, prefix: str = "") -> Tensor:
    """The 29-slot AdaIN decoder (convs at slots 1,5,8,11,14,18,21,25,28; ups after 1, 14, 21)."""
    x = feat
    for slot in (1, 5, 8, 11, 14, 18, 21, 25):
        x = F.relu(conv(x, state, f"{prefix}{slot}"))
        if slot in (1, 14, 21):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
    return conv(x, state, f"{prefix}28")


def random_conv(gen: torch.Generator, cout: int, cin: int, k: int, std: float | None = None) -> dict[str, Tensor]:
    """He-scaled random weights (or ``std``) and small biases, shaped as a PyTorch Conv2d's."""
    std = (2.0 / (cin * k * k)) ** 0.5 if std is None else std
    return {"weight": torch.randn(cout, cin, k, k, generator=gen) * std,
            "bias": torch.randn(cout, generator=gen) * 0.01}


def random_adain_decoder_state(gen: torch.Generator) -> dict[str, Tensor]:
    """Random tensors in the layout of pytorch-AdaIN's ``decoder.pth``."""
    shapes = {1: (256, 512), 5: (256, 256), 8: (256, 256), 11: (256, 256), 14: (128, 256), 18: (128, 128),
              21: (64, 128), 25: (64, 64), 28: (3, 64)}
    out = {}
    for slot, (cout, cin) in shapes.items():
        for name, tensor in random_conv(gen, cout, cin, 3).items():
            out[f"{slot}.{name}"] = tensor
    return out
