"""An example third-party nstzoo plugin: ``colour-mix``, a stylizer with (tiny) learned weights.

The method: normalise the content's RGB channels to the style's mean and std (a colour transfer),
then blend it with the content through a learned per-channel gate and add a learned 1x1 colour
mixing residual. Its "official" checkpoint is a ``.pth`` in another key layout, so the plugin
exercises the whole weights path: ``nstzoo weights import colour-mix colour_mix.pth`` ->
safetensors in the store -> strict load -> ``nstzoo stylize --stylizer colour-mix``.

It also brings its training objective (a :class:`~nstzoo.Recipe`), so
``nstzoo stylizers train colour-mix --content C --style S --out RUN`` trains it with no change to
nstzoo: match the style's colour statistics while keeping the content's structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nstzoo import Recipe, StylizerSpec, TrainParts, hookimpl
from nstzoo.errors import WeightsError
from nstzoo.recipes import RecipeContext
from nstzoo.weights import read_checkpoint, unwrap_state_dict

# Official key -> our key. The original was trained under DataParallel, hence "module.".
OFFICIAL_KEYS = {"module.gate": "gate_logit", "module.mix.weight": "mix.weight", "module.mix.bias": "mix.bias"}


class ColourMix(nn.Module):
    """content ``[B,3,H,W]``, style ``[B,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1]."""

    def __init__(self, residual_scale: float = 0.1):
        super().__init__()
        self.gate_logit = nn.Parameter(torch.zeros(3))
        self.mix = nn.Conv2d(3, 3, kernel_size=1)
        self.residual_scale = residual_scale

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        c_mean, c_std = content.mean((2, 3), keepdim=True), content.std((2, 3), keepdim=True) + 1e-5
        s_mean, s_std = style.mean((2, 3), keepdim=True), style.std((2, 3), keepdim=True) + 1e-5
        transferred = (content - c_mean) / c_std * s_std + s_mean
        gate = torch.sigmoid(self.gate_logit).view(1, 3, 1, 1)
        blended = content + gate * (transferred - content)
        return (blended + self.residual_scale * torch.tanh(self.mix(blended))).clamp(0, 1)


def import_official(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Map the original ``colour_mix.pth`` (keys ``module.*``) to this module's state dict."""
    if len(paths) != 1:
        raise WeightsError(f"colour-mix takes exactly one file (colour_mix.pth), got {len(paths)}")
    state = unwrap_state_dict(read_checkpoint(paths[0]), paths[0])
    unknown = sorted(set(state) - set(OFFICIAL_KEYS))
    missing = sorted(set(OFFICIAL_KEYS) - set(state))
    if unknown or missing:
        raise WeightsError(f"{paths[0]}: not a colour-mix checkpoint (unexpected keys: {unknown}, missing: {missing})")
    return {OFFICIAL_KEYS[k]: v for k, v in state.items()}


@dataclass
class ColourMixTrainOptions:
    """Loss weights (``--set recipe.style_weight=2``): colour statistics vs. content structure."""

    style_weight: float = 1.0
    content_weight: float = 0.2


def build(model: ColourMix, ctx: RecipeContext) -> TrainParts:
    """Every parameter is trained with one Adam; no loss network is needed."""
    return TrainParts(model, {"total": ctx.adam(model.parameters())})


def losses(parts: TrainParts, config, content: torch.Tensor, style: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
    """Channel mean/std of the output vs. the style's (colour), pixel MSE to the content (structure)."""
    output = parts.model(content, style)
    style_term = (F.mse_loss(output.mean((2, 3)), style.mean((2, 3)))
                  + F.mse_loss(output.std((2, 3)), style.std((2, 3))))
    content_term = F.mse_loss(output - output.mean((2, 3), keepdim=True),
                              content - content.mean((2, 3), keepdim=True))
    options = config.recipe
    total = options.style_weight * style_term + options.content_weight * content_term
    return {"style": style_term, "content": content_term, "total": total}


RECIPE = Recipe(build=build, losses=losses, options=ColourMixTrainOptions,
                defaults={"steps": 200, "batch_size": 4, "size": 64, "lr": 1e-2, "lr_decay": 0.0,
                          "checkpoint_every": 50})


@hookimpl
def register_stylizers(register):
    register(StylizerSpec(
        name="colour-mix",
        factory=ColourMix,
        summary="Example third-party plugin: learned gate + colour mixing over an RGB statistics transfer",
        paper="nstzoo example plugin (examples/plugin)",
        weight_files=("colour_mix.pth",),
        import_official=import_official,
        weights_source="your own training run: nstzoo stylizers train colour-mix --content C --style S --out RUN",
        recipe=RECIPE,
    ))
