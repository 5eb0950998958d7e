"""Shared pieces of the stylize tests: random-init stylizers whose outputs are not clamped to black."""

from __future__ import annotations

import torch
from torch import nn

from nstzoo.weights import load_stylizer


def lively(name: str) -> nn.Module:
    """``load_stylizer(name, random_init=True)`` re-drawn so that its output depends on its inputs.

    PyTorch's default init shrinks signals layer by layer: through a random VGG and decoder the output
    barely depends on content or style and sits near 0, so most pixels clamp to black and controls
    would have nothing to move. Here every convolution is re-drawn He-normal (signal-preserving
    through ReLUs, biases 0), and the image-producing 3-channel convolution is rescaled so its output
    has a spread of 0.15 centred on mid-grey (around 0 for CAST and NeAT, whose outputs are mapped or
    added to the content). The weights stay random and seeded.
    """
    torch.manual_seed(0)
    module = load_stylizer(name, random_init=True)
    if name == "dumoulin":
        # Its random init holds 26 identical styles (gammas 1, betas 0) and all-zero signatures, so every
        # style image would pick the same style: draw distinct ones.
        with torch.no_grad():
            for norm in [m for m in module.modules() if hasattr(m, "gamma") and hasattr(m, "beta")]:
                norm.gamma.copy_(1.0 + 0.5 * torch.randn_like(norm.gamma))
                norm.beta.copy_(0.5 * torch.randn_like(norm.beta))
            module.style_signatures.copy_(torch.randn_like(module.style_signatures) * 0.1)
            module.signature_scale.fill_(0.1)
        module.temperature = 1.0  # soft weights over the 26 styles, so nearby style images still differ
        return module
    if name not in ("adain", "efdm", "sanet", "pama", "adaattn", "cast"):
        return module
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
    last = [m for m in convs if m.out_channels == 3][-1]
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        module(smooth(11, 32, 32), smooth(12, 32, 32))
    hook.remove()
    with torch.no_grad():
        scale = 0.15 / seen[-1].std().clamp_min(1e-8)
        last.weight.mul_(scale)
        # Centred per channel: the raw output's mean is not 0 (ReLU features), and an off-centre output
        # clamps at 0 or 1 where controls can no longer move it.
        last.bias.copy_((0.0 if name == "cast" else 0.5) - scale * seen[-1].mean(dim=(0, 2, 3)))
    return module


def smooth(seed: int, h: int, w: int, batch: int = 1) -> torch.Tensor:
    """A smooth random image ``[batch,3,h,w]`` in [0, 1] with some texture."""
    g = torch.Generator().manual_seed(seed)
    low = torch.nn.functional.interpolate(torch.rand(batch, 3, 4, 4, generator=g), size=(h, w), mode="bilinear",
                                          align_corners=False)
    return (0.85 * low + 0.15 * torch.rand(batch, 3, h, w, generator=g)).clamp(0, 1)
