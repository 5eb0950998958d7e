"""PAMA (Luo et al., ACCV 2022): three attentional alignment stages at VGG relu4_1, then the AdaIN decoder.

Official files (luoxuan-cs/PAMA README, Google Drive): ``encoder.pth`` (the normalised VGG-19;
only slots up to relu4_1 are used at inference), ``decoder.pth``, ``PAMA1.pth``, ``PAMA2.pth``,
``PAMA3.pth``. The original code loads the encoder and decoder with ``strict=False``, which hides
wrong files; here every file is checked key by key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, WeightsError
from ..hookspecs import hookimpl
from ..nn.attention import AlignmentStage, alignment_stage_keys
from ..nn.checkpoints import decoder_keys, identify_files, prefixed, remap_exact
from ..nn.decoder import adain_decoder
from ..nn.sizing import attention_working_size, pad_to_multiple, resize_to
from ..nn.vgg import NormalisedVGG19, select_vgg_keys
from ..nn.losses.histogram import RGBuvHistogram
from ..nn.losses.manifold import (PAMA_LOSS_LAYERS, PAMA_STAGE_WEIGHTS, RECONSTRUCTION_FEATURE_WEIGHT,
                                  RECONSTRUCTION_PIXEL_WEIGHT, pama_stage_loss)
from ..nn.losses.statistics import mse_feature_loss
from ..recipes import RecipeContext, vgg_generator_parts
from ..specs import Recipe, StylizerSpec, TrainParts
from ._controls import blend, check_alpha, style_weights_for, weighted_sum

PAPER = ("Xuan Luo, Zhen Han, Lingkang Yang, Lingling Zhang. Consistent Style Transfer / Progressive "
         "Attentional Manifold Alignment for Arbitrary Style Transfer. ACCV 2022. arXiv:2112.04769")
WEIGHTS_SOURCE = ("https://github.com/luoxuan-cs/PAMA (README: Google Drive checkpoints; encoder.pth, "
                  "decoder.pth, PAMA1.pth, PAMA2.pth, PAMA3.pth)")
WEIGHT_FILES = ("encoder.pth", "decoder.pth", "PAMA1.pth", "PAMA2.pth", "PAMA3.pth")
DEFAULT_MAX_TOKENS = 4096  # relu4_1 positions (512x512 px); same policy as SANet
STAGES = 3


class PAMAStylizer(nn.Module):
    """``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

    relu4_1 features of the content are aligned to the style's in three stages (each gets the raw
    style feature), then decoded. Parameters: VGG to relu4_1 3,505,740 + 3 x 6,313,219 stages +
    decoder 3,505,219 = 25,950,616.

    Any size works: the content is reflection-padded to a multiple of 8 (the decoder's stride) and
    cropped back. Memory policy (as SANet): each of the three attention maps costs ``Nc * Ns`` with
    ``N = H*W/64``; content or style with more than ``max_tokens`` relu4_1 positions is resized
    (aspect kept) to fit, the content is stylised at that size and the result resized back.

    ``nstzoo stylize`` uses :meth:`stylize_controlled` instead, which keeps the content at full size
    (fused attention needs no ``Nc x Ns`` map) and tiles images larger than its memory budget.

    Args:
        max_tokens: relu4_1 positions allowed for content and for style (each).
    """

    #: Peak activation bytes per content pixel of one fp32 CPU call (bench/stylize_memory.py --calibrate,
    #: plus ~25 %); the stylize engine plans tiles with it.
    peak_bytes_per_pixel = 1450

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS):
        super().__init__()
        if int(max_tokens) < 1:
            raise ConfigError(f"pama: option max_tokens must be >= 1, got {max_tokens!r}")
        self.max_tokens = int(max_tokens)
        self.encoder = NormalisedVGG19("relu4_1")
        self.align1 = AlignmentStage(512)
        self.align2 = AlignmentStage(512)
        self.align3 = AlignmentStage(512)
        self.decoder = adain_decoder()

    def align(self, content_feat: Tensor, style_feat: Tensor) -> list[Tensor]:
        """The three stages' outputs ``[B,512,h,w]``; every stage attends over the raw style feature."""
        outputs, feat = [], content_feat
        for stage in (self.align1, self.align2, self.align3):
            feat = stage(feat, style_feat)
            outputs.append(feat)
        return outputs

    def stylize_unclamped(self, content: Tensor, style: Tensor) -> Tensor:
        """Raw decoder output for a content whose sides are multiples of 8 (no resizing, no clamp)."""
        return self.decoder(self.align(self.encoder(content), self.encoder(style))[-1])

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        h, w = content.shape[-2:]
        style = resize_to(style, attention_working_size(*style.shape[-2:], self.max_tokens))
        padded, (wh, ww) = pad_to_multiple(resize_to(content, attention_working_size(h, w, self.max_tokens)), 8)
        out = self.stylize_unclamped(padded, style)[..., :wh, :ww]
        return resize_to(out, (h, w)).clamp(0.0, 1.0)

    def stylize_controlled(self, content: Tensor, styles: Sequence[Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None, whole: Tensor | None = None) -> Tensor:
        """``content [B,3,H,W]``, K ``styles [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        The content is stylised at its own size (the fused attention needs no ``Nc x Ns`` map; callers
        tile large images); styles keep the ``max_tokens`` cap. Interpolation mixes the aligned
        features after the third stage, ``sum_k w_k F3(c, s_k)``; ``alpha`` blends them with the
        content's relu4_1 feature before decoding (``alpha=0`` is the decoder's reconstruction).
        """
        weights = style_weights_for(styles, style_weights)
        alpha = check_alpha(alpha)
        padded, (h, w) = pad_to_multiple(content, 8)
        content_feat = self.encoder(padded)
        aligned = [self.align(content_feat, self.encoder(resize_to(style, attention_working_size(
            *style.shape[-2:], self.max_tokens))))[-1] for style in styles]
        out = self.decoder(blend(alpha, weighted_sum(aligned, weights), content_feat))
        return out[..., :h, :w].clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- official import
_STAGE_NUMBER = re.compile(r"(\d+)\D*$")


def _stage_number(path: Path) -> int | None:
    match = _STAGE_NUMBER.search(path.stem)
    return int(match.group(1)) if match else None


def _looks_like_stage(state: dict) -> bool:
    return "conv_in.weight" in state or any(k.startswith(("attn.", "fuse.")) for k in state)


def import_official(paths: Sequence[Path]) -> dict[str, Tensor]:
    """``encoder.pth``, ``decoder.pth``, ``PAMA1.pth``, ``PAMA2.pth``, ``PAMA3.pth`` (any order) -> state dict.

    Files are recognised by their keys; the three stage files share one key layout, so their
    order comes from the number at the end of the file name (``PAMA2.pth`` -> stage 2). Every
    key is checked: a missing, unexpected or misshapen key is a :class:`WeightsError` naming the
    file and key. The encoder may hold the whole VGG (slots up to 51): deeper slots are dropped.
    """
    roles: dict[str, Any] = {
        "vgg": lambda _p, s: "0.weight" in s,
        "decoder": lambda _p, s: "1.weight" in s and "0.weight" not in s and not _looks_like_stage(s),
    }
    for k in range(1, STAGES + 1):
        roles[f"stage{k}"] = (lambda k: lambda p, s: _looks_like_stage(s) and _stage_number(p) == k)(k)
    names = dict(zip(["vgg", "decoder"] + [f"stage{k}" for k in range(1, STAGES + 1)], WEIGHT_FILES))
    try:
        files = identify_files(paths, roles=roles, expected_names=names)
    except WeightsError:
        unnumbered = [p for p in paths if _stage_number(p) not in range(1, STAGES + 1) and p.suffix]
        stage_like = [p for p in unnumbered if p.is_file() and _is_stage_file(p)]
        if stage_like:
            raise WeightsError(f"{stage_like[0]}: a PAMA stage file, but its name does not end in 1, 2 or 3, "
                               "so its stage is unknown", hint="keep the official names PAMA1.pth PAMA2.pth PAMA3.pth")
        raise
    vgg_path, vgg_state = files["vgg"]
    dec_path, dec_state = files["decoder"]
    state = {**prefixed(select_vgg_keys(vgg_state, upto="relu4_1", source=str(vgg_path)), "encoder."),
             **prefixed(remap_exact(dec_state, {k: k for k in decoder_keys()}, dec_path), "decoder.")}
    stage_keys = alignment_stage_keys()
    for k in range(1, STAGES + 1):
        stage_path, stage_state = files[f"stage{k}"]
        state.update(prefixed(remap_exact(stage_state, {key: key for key in stage_keys}, stage_path), f"align{k}."))
    return state


def _is_stage_file(path: Path) -> bool:
    from ..nn.checkpoints import read_official_state

    try:
        return _looks_like_stage(read_official_state(path))
    except WeightsError:
        return False


# ----------------------------------------------------------------------------- training
@dataclass
class PAMATrainOptions:
    """PAMA's switches: ``color`` turns on the RGB-uv histogram colour loss (the released default)."""

    color: bool = True


def _build(model: nn.Module, ctx: RecipeContext) -> TrainParts:
    parts = vgg_generator_parts(model, ctx)
    if ctx.config.recipe.color:
        parts.modules["histogram"] = RGBuvHistogram().to(ctx.device)
    return parts


def _losses(parts: TrainParts, cfg: Any, content: Tensor, style: Tensor, step: int) -> dict[str, Tensor]:
    return pama_training_terms(parts.model, parts.loss_network, content, style, parts.modules.get("histogram"))


def pama_training_terms(model: PAMAStylizer, loss_vgg: NormalisedVGG19, content: Tensor, style: Tensor,
                        histogram: Any | None) -> dict[str, Tensor]:
    """PAMA's training objective for a batch (sizes multiples of 8): every term and ``"total"``.

    Each stage's output is decoded and judged on relu3_1..relu5_1 of ``loss_vgg`` with the stage
    weights of the reference (content 12/9/7, REMD 2, moment 2, colour 0.25/0.5/1), normalised by
    the stage's weight sum; plus reconstruction of content and style from their own features
    (0.5 x feature MSE per layer, 25 x pixel MSE).
    """
    with torch.no_grad():
        content_loss_feats = loss_vgg.taps(content, PAMA_LOSS_LAYERS)
        style_loss_feats = loss_vgg.taps(style, PAMA_LOSS_LAYERS)
    content_feat, style_feat = model.encoder(content), model.encoder(style)
    terms: dict[str, Tensor] = {}
    total = content.new_zeros(())
    for k, (aligned, weights) in enumerate(zip(model.align(content_feat, style_feat), PAMA_STAGE_WEIGHTS), 1):
        output = model.decoder(aligned)
        stage = pama_stage_loss(loss_vgg.taps(output, PAMA_LOSS_LAYERS), content_loss_feats, style_loss_feats,
                                output, style, weights, histogram)
        for name, value in stage.items():
            terms[f"stage{k}_{name}"] = value
        total = total + stage["total"]
    rec_content, rec_style = model.decoder(content_feat), model.decoder(style_feat)
    terms["reconstruction_features"] = RECONSTRUCTION_FEATURE_WEIGHT * (
        mse_feature_loss(loss_vgg.taps(rec_content, PAMA_LOSS_LAYERS), content_loss_feats)
        + mse_feature_loss(loss_vgg.taps(rec_style, PAMA_LOSS_LAYERS), style_loss_feats))
    terms["reconstruction_pixels"] = RECONSTRUCTION_PIXEL_WEIGHT * (
        F.mse_loss(rec_content, content) + F.mse_loss(rec_style, style))
    terms["total"] = total + terms["reconstruction_features"] + terms["reconstruction_pixels"]
    return terms


# Short runs by default (the released models trained far longer); crops at `size` after resizing the
# shorter side to `size`, as the original script does.
RECIPE = Recipe(build=_build, losses=_losses, options=PAMATrainOptions,
                defaults={"steps": 1000, "batch_size": 4, "checkpoint_every": 500})


SPEC = StylizerSpec(
    name="pama",
    factory=PAMAStylizer,
    summary="PAMA: three attentional manifold-alignment stages on VGG relu4_1, decoded by the AdaIN decoder",
    paper=PAPER,
    weight_files=WEIGHT_FILES,
    import_official=import_official,
    default_options={"max_tokens": DEFAULT_MAX_TOKENS},
    recipe=RECIPE,
    controls=frozenset({"alpha", "style_mix"}),
    weights_source=WEIGHTS_SOURCE,
)


@hookimpl
def register_stylizers(register: Any) -> None:
    register(SPEC)


__all__ = ["PAMAStylizer", "PAMATrainOptions", "import_official", "pama_training_terms", "RECIPE", "SPEC",
           "register_stylizers"]
