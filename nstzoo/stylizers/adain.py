"""AdaIN (Huang & Belongie, ICCV 2017): encode with VGG, match channel moments, decode.

Official files (naoto0804/pytorch-AdaIN release): ``vgg_normalised.pth`` (the 53-slot VGG; only
the slots up to relu4_1 are kept) and ``decoder.pth``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..hookspecs import hookimpl
from ..nn.encoder_decoder import Relu41EncoderDecoder, import_vgg_and_decoder
from ..nn.sizing import pad_to_multiple
from ..nn.stats import adain, mean_std, mean_variance_norm
from ..nn.losses.statistics import mean_std_loss
from ..recipes import vgg_generator_parts
from ..specs import Recipe, StylizerSpec, TrainParts
from ._controls import blend, check_alpha, style_weights_for, weighted_sum

PAPER = ("Xun Huang, Serge Belongie. Arbitrary Style Transfer in Real-time with Adaptive Instance "
         "Normalization. ICCV 2017. arXiv:1703.06868")
WEIGHTS_SOURCE = ("https://github.com/naoto0804/pytorch-AdaIN/releases/tag/v0.0.0 "
                  "(vgg_normalised.pth, decoder.pth)")


class AdaINStylizer(Relu41EncoderDecoder):
    """``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

    relu4_1 features of the content re-scaled to the style's channel mean and std, then decoded
    (:class:`~nstzoo.nn.encoder_decoder.Relu41EncoderDecoder`: any input size; ``alpha`` in [0, 1],
    0 reconstructs the content).
    """

    method = "adain"
    #: Peak activation bytes per content pixel of one fp32 CPU call (bench/stylize_memory.py --calibrate,
    #: plus ~25 %); the stylize engine plans tiles with it.
    peak_bytes_per_pixel = 1200

    def match(self, content_feat: Tensor, style_feat: Tensor) -> Tensor:
        return adain(content_feat, style_feat)

    def stylize_controlled(self, content: Tensor, styles: Sequence[Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None, whole: Tensor | None = None) -> Tensor:
        """``content [B,3,H,W]``, K ``styles [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        Style interpolation mixes the target statistics: the decoder sees ``mvn(c) * sum_k w_k std_k +
        sum_k w_k mean_k``, which is exactly the reference test script's ``sum_k w_k adain(c, s_k)``.
        ``alpha`` then blends that with the content feature (the released ``--alpha``).
        """
        weights = style_weights_for(styles, style_weights)
        alpha = check_alpha(alpha)
        padded, (h, w) = pad_to_multiple(content, 8)
        content_feat = self.encoder(padded)
        moments = [mean_std(self.encoder(style)) for style in styles]  # each [B or 1,512,1,1]: broadcasts
        mean = weighted_sum([m for m, _ in moments], weights)
        std = weighted_sum([s for _, s in moments], weights)
        target = mean_variance_norm(content_feat) * std + mean
        out = self.decoder(blend(alpha, target, content_feat))
        return out[..., :h, :w].clamp(0.0, 1.0)


def import_official(paths: Sequence[Path]) -> dict[str, Tensor]:
    """``vgg_normalised.pth`` + ``decoder.pth`` (any order) -> this module's state dict."""
    return import_vgg_and_decoder(paths, {"vgg": "vgg_normalised.pth", "decoder": "decoder.pth"})


# ----------------------------------------------------------------------------- training recipe
@dataclass
class AdaINTrainOptions:
    """AdaIN's objective: ``content_weight * Lc + style_weight * Ls`` (train.py defaults: 1 and 10)."""

    content_weight: float = 1.0
    style_weight: float = 10.0


def adain_losses(parts: TrainParts, cfg: Any, content: Tensor, style: Tensor, step: int) -> dict[str, Tensor]:
    """Lc: MSE between the output's relu4_1 and the AdaIN target; Ls: channel mean/std MSE over relu1_1..relu4_1."""
    model, vgg = parts.model, parts.loss_network
    style_feats = vgg.taps(style, LOSS_LAYERS)
    target = adain(vgg.taps(content, ["relu4_1"])[0], style_feats[-1])
    output_feats = vgg.taps(model.decoder(target), LOSS_LAYERS)
    content_loss = F.mse_loss(output_feats[-1], target)
    style_loss = mean_std_loss(output_feats, style_feats)
    options = cfg.recipe
    total = options.content_weight * content_loss + options.style_weight * style_loss
    return {"content": content_loss, "style": style_loss, "total": total}


LOSS_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
# The original script resizes the shorter side to 512 and crops 256 (load_scale 2), batch 8, 160k steps.
RECIPE = Recipe(build=vgg_generator_parts, losses=adain_losses, options=AdaINTrainOptions,
                defaults={"steps": 160_000, "batch_size": 8, "checkpoint_every": 1000}, load_scale=2)


SPEC = StylizerSpec(
    name="adain",
    factory=AdaINStylizer,
    summary="AdaIN: VGG relu4_1 features re-scaled to the style's channel mean/std, then decoded",
    paper=PAPER,
    weight_files=("vgg_normalised.pth", "decoder.pth"),
    import_official=import_official,
    default_options={"alpha": 1.0},
    recipe=RECIPE,
    controls=frozenset({"alpha", "style_mix"}),
    weights_source=WEIGHTS_SOURCE,
)


@hookimpl
def register_stylizers(register: Any) -> None:
    register(SPEC)


__all__ = ["AdaINStylizer", "AdaINTrainOptions", "adain_losses", "import_official", "RECIPE", "SPEC", "register_stylizers"]
