"""SANet (Park & Lee, CVPR 2019): style-attentional networks at relu4_1 and relu5_1.

There is no official code; the de-facto reference and checkpoints are GlebSBrykin/SANET (MIT):
``vgg_normalised.pth``, ``decoder_iter_500000.pth``, ``transformer_iter_500000.pth``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..nn.checkpoints import decoder_keys, identify_files, prefixed, remap_exact
from ..nn.decoder import adain_decoder
from ..nn.sizing import attention_working_size, pad_to_multiple, resize_to
from ..nn.stats import mean_variance_norm
from ..nn.vgg import NormalisedVGG19, select_vgg_keys
from ..nn.losses.statistics import mean_std_loss, mse_feature_loss
from ..recipes import vgg_generator_parts
from ..specs import Recipe, StylizerSpec, TrainParts
from ._controls import blend, check_alpha, style_weights_for, to_batch, weighted_sum

PAPER = ("Dae Young Park, Kwang Hee Lee. Arbitrary Style Transfer with Style-Attentional Networks. "
         "CVPR 2019. arXiv:1812.02342")
WEIGHTS_SOURCE = ("https://github.com/GlebSBrykin/SANET (README links / latest release: vgg_normalised.pth, "
                  "decoder_iter_500000.pth, transformer_iter_500000.pth)")
MIN_SIDE = 32  # relu5_1 (1/16) must keep 2 rows and columns for its reflection padding
DEFAULT_MAX_TOKENS = 4096  # relu4_1 positions, i.e. a 512x512 image: one 4096x4096 attention map = 64 MiB fp32


class SANetBlock(nn.Module):
    """Style attention: each content position gathers style features by normalised-feature similarity.

    ``forward(content [B,C,Hc,Wc], style [B,C,Hs,Ws]) -> [B,C,Hc,Wc]``; residual on the raw content.
    """

    def __init__(self, channels: int = 512):
        super().__init__()
        self.f = nn.Conv2d(channels, channels, 1)
        self.g = nn.Conv2d(channels, channels, 1)
        self.h = nn.Conv2d(channels, channels, 1)
        self.out_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        b, c, hc, wc = content.shape
        # A style batch of 1 serves every content of the batch (tiles, video frames): it is projected
        # once and broadcast, not copied B times through the convolutions.
        query = self.f(mean_variance_norm(content)).flatten(2).transpose(1, 2)  # [B,Nc,C]
        key = to_batch(self.g(mean_variance_norm(style)).flatten(2).transpose(1, 2), b)  # [B,Ns,C]
        value = to_batch(self.h(style).flatten(2).transpose(1, 2), b)  # [B,Ns,C]; the raw style, as in the reference
        # softmax(Q K^T) V over style positions, unscaled as in the reference (scale=1). The fused kernel
        # computes it blockwise without materialising the [B,Nc,Ns] map (and its softmax copy): memory
        # O(Nc*C) instead of O(Nc*Ns), which is what lets a 1024-px tile attend over the whole style.
        # fp32 results differ from bmm + softmax + bmm by ~1e-7 (summation order).
        out = F.scaled_dot_product_attention(query[:, None], key[:, None], value[:, None], scale=1.0)[:, 0]
        return self.out_conv(out.transpose(1, 2).reshape(b, c, hc, wc)) + content


class SANetTransform(nn.Module):
    """Fuses attention at relu4_1 with upsampled attention at relu5_1 through a 3x3 conv.

    Key layout of ``transformer_iter_*.pth``: ``sanet4_1.*``, ``sanet5_1.*``, ``merge_conv.*``.
    """

    def __init__(self, channels: int = 512):
        super().__init__()
        self.sanet4_1 = SANetBlock(channels)
        self.sanet5_1 = SANetBlock(channels)
        self.merge_conv_pad = nn.ReflectionPad2d(1)
        self.merge_conv = nn.Conv2d(channels, channels, 3)

    def forward(self, content4_1: Tensor, style4_1: Tensor, content5_1: Tensor, style5_1: Tensor) -> Tensor:
        deep = F.interpolate(self.sanet5_1(content5_1, style5_1), scale_factor=2, mode="nearest")
        return self.merge_conv(self.merge_conv_pad(self.sanet4_1(content4_1, style4_1) + deep))


def _working_size(h: int, w: int, max_tokens: int) -> tuple[int, int]:
    h2, w2 = attention_working_size(h, w, max_tokens)
    if min(h2, w2) < MIN_SIDE:
        scale = MIN_SIDE / min(h2, w2)
        h2, w2 = max(MIN_SIDE, round(h2 * scale)), max(MIN_SIDE, round(w2 * scale))
    return h2, w2


class SANetStylizer(nn.Module):
    """``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

    Any size works. The reference code needs sides that are multiples of 16 (relu5_1, upsampled,
    must match relu4_1); here the content is reflection-padded to a multiple of 16 and the result
    cropped back.

    Memory policy: attention costs ``Nc * Ns`` per sample and block, with ``N = H*W/64`` positions
    at relu4_1. An image with more than ``max_tokens`` positions is resized (aspect kept) to fit
    the budget before encoding: the content is stylised at that capped size and the result is
    resized bilinearly back to ``H x W``; the style is simply used at its capped size. The default,
    4096 positions (512x512 px), bounds each attention map to 64 MiB per sample in fp32. Images
    are never worked on with a side below 32 px (the deepest VGG layer needs two rows), so tiny
    inputs are upsampled instead, whatever the budget.

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
            raise ConfigError(f"sanet: option max_tokens must be >= 1, got {max_tokens!r}")
        self.max_tokens = int(max_tokens)
        self.encoder = NormalisedVGG19("relu5_1")
        self.transform = SANetTransform()
        self.decoder = adain_decoder()

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """relu4_1 ``[B,512,H/8,W/8]`` and relu5_1 ``[B,512,H/16,W/16]`` of images in [0, 1]."""
        relu4_1, relu5_1 = self.encoder.taps(images, ["relu4_1", "relu5_1"])
        return relu4_1, relu5_1

    def stylize_padded(self, content: Tensor, style: Tensor) -> Tensor:
        """Raw decoder output for a content whose sides are multiples of 16 (no resizing, no clamp)."""
        content4_1, content5_1 = self.encode(content)
        style4_1, style5_1 = self.encode(style)
        return self.decoder(self.transform(content4_1, style4_1, content5_1, style5_1))

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        h, w = content.shape[-2:]
        work = _working_size(h, w, self.max_tokens)
        style = resize_to(style, _working_size(*style.shape[-2:], self.max_tokens))
        padded, (wh, ww) = pad_to_multiple(resize_to(content, work), 16)
        out = self.stylize_padded(padded, style)[..., :wh, :ww]
        return resize_to(out, (h, w)).clamp(0.0, 1.0)

    def stylize_controlled(self, content: Tensor, styles: Sequence[Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None, whole: Tensor | None = None) -> Tensor:
        """``content [B,3,H,W]``, K ``styles [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        Unlike :meth:`forward`, the content is stylised at its own size (only sides below 32 px are
        upsampled): the fused attention needs no ``Nc x Ns`` map, and callers tile large images. Styles
        keep the ``max_tokens`` cap (they only supply features to attend to). Interpolation mixes the
        transformed relu4_1 features ``sum_k w_k T(c, s_k)``; ``alpha`` blends them with the content's
        relu4_1 feature before decoding.
        """
        weights = style_weights_for(styles, style_weights)
        alpha = check_alpha(alpha)
        h, w = content.shape[-2:]
        work = (h, w) if min(h, w) >= MIN_SIDE else _working_size(h, w, h * w)
        padded, (wh, ww) = pad_to_multiple(resize_to(content, work), 16)
        content4_1, content5_1 = self.encode(padded)
        transformed = []
        for style in styles:
            style4_1, style5_1 = self.encode(resize_to(style, _working_size(*style.shape[-2:], self.max_tokens)))
            transformed.append(self.transform(content4_1, style4_1, content5_1, style5_1))
        feat = blend(alpha, weighted_sum(transformed, weights), content4_1)
        out = self.decoder(feat)[..., :wh, :ww]
        return resize_to(out, (h, w)).clamp(0.0, 1.0)


_TRANSFORM_PREFIXES = ("sanet4_1.", "sanet5_1.", "merge_conv.")


def _transform_keys() -> list[str]:
    block = [f"{m}.{p}" for m in ("f", "g", "h", "out_conv") for p in ("weight", "bias")]
    return ([f"sanet4_1.{k}" for k in block] + [f"sanet5_1.{k}" for k in block]
            + ["merge_conv.weight", "merge_conv.bias"])


def import_official(paths: Sequence[Path]) -> dict[str, Tensor]:
    """``vgg_normalised.pth``, ``decoder_iter_*.pth``, ``transformer_iter_*.pth`` (any order) -> state dict.

    Also accepts the transformer saved by the mumair5393 fork (``SAN1`` = relu5_1, ``SAN2`` = relu4_1,
    under an optional ``sa_module.`` prefix).
    """
    def is_transformer(_p: Path, state: dict) -> bool:
        return any(k.startswith(_TRANSFORM_PREFIXES + ("sa_module.", "SAN1.", "SAN2.")) for k in state)

    files = identify_files(
        paths,
        roles={
            "transformer": is_transformer,
            "vgg": lambda _p, s: "0.weight" in s,
            "decoder": lambda _p, s: "1.weight" in s and "0.weight" not in s,
        },
        expected_names={"vgg": "vgg_normalised.pth", "decoder": "decoder_iter_500000.pth",
                        "transformer": "transformer_iter_500000.pth"},
    )
    vgg_path, vgg_state = files["vgg"]
    dec_path, dec_state = files["decoder"]
    tr_path, tr_state = files["transformer"]
    tr_state = {_mumair_to_gleb(k): v for k, v in tr_state.items()}
    transform = remap_exact(tr_state, {k: k for k in _transform_keys()}, tr_path)
    decoder = remap_exact(dec_state, {k: k for k in decoder_keys()}, dec_path)
    vgg = select_vgg_keys(vgg_state, upto="relu5_1", source=str(vgg_path))
    return {**prefixed(vgg, "encoder."), **prefixed(transform, "transform."), **prefixed(decoder, "decoder.")}


def _mumair_to_gleb(key: str) -> str:
    key = key.removeprefix("sa_module.")
    if key.startswith("SAN1."):
        return "sanet5_1." + key[len("SAN1."):]
    if key.startswith("SAN2."):
        return "sanet4_1." + key[len("SAN2."):]
    return key


# ----------------------------------------------------------------------------- training recipe
@dataclass
class SANetTrainOptions:
    """SANet's objective: ``content_weight*Lc + style_weight*Ls + 50*Lid1 + 1*Lid2`` (paper: 1, 3, 50, 1)."""

    content_weight: float = 1.0
    style_weight: float = 3.0
    identity_pixel_weight: float = 50.0
    identity_feature_weight: float = 1.0


def sanet_losses(parts: TrainParts, cfg: Any, content: Tensor, style: Tensor, step: int) -> dict[str, Tensor]:
    """Lc on normalised relu4_1 and relu5_1, Ls over relu1_1..relu5_1, identity losses on pixels (Lid1)
    and features (Lid2) of the content and style stylised with themselves."""
    model, vgg = parts.model, parts.loss_network
    content_feats, style_feats = vgg.taps(content, LOSS_LAYERS), vgg.taps(style, LOSS_LAYERS)

    def decode(c: list[Tensor], s: list[Tensor]) -> Tensor:
        return model.decoder(model.transform(c[3], s[3], c[4], s[4]))

    output_feats = vgg.taps(decode(content_feats, style_feats), LOSS_LAYERS)
    content_loss = sum(F.mse_loss(mean_variance_norm(output_feats[i]), mean_variance_norm(content_feats[i]))
                       for i in (3, 4))
    style_loss = mean_std_loss(output_feats, style_feats)
    content_id, style_id = decode(content_feats, content_feats), decode(style_feats, style_feats)
    identity1 = F.mse_loss(content_id, content) + F.mse_loss(style_id, style)
    identity2 = mse_feature_loss(vgg.taps(content_id, LOSS_LAYERS), content_feats) + \
        mse_feature_loss(vgg.taps(style_id, LOSS_LAYERS), style_feats)
    o = cfg.recipe
    total = (o.content_weight * content_loss + o.style_weight * style_loss + o.identity_pixel_weight * identity1
             + o.identity_feature_weight * identity2)
    return {"content": content_loss, "style": style_loss, "identity1": identity1, "identity2": identity2,
            "total": total}


LOSS_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
# The original script resizes the shorter side to 512 and crops 256 (load_scale 2), batch 8, 160k steps.
RECIPE = Recipe(build=vgg_generator_parts, losses=sanet_losses, options=SANetTrainOptions,
                defaults={"steps": 160_000, "batch_size": 8, "checkpoint_every": 1000}, load_scale=2)


SPEC = StylizerSpec(
    name="sanet",
    factory=SANetStylizer,
    summary="SANet: style attention over VGG relu4_1 and relu5_1 features, fused and decoded",
    paper=PAPER,
    weight_files=("vgg_normalised.pth", "decoder_iter_500000.pth", "transformer_iter_500000.pth"),
    import_official=import_official,
    default_options={"max_tokens": DEFAULT_MAX_TOKENS},
    recipe=RECIPE,
    controls=frozenset({"alpha", "style_mix"}),
    weights_source=WEIGHTS_SOURCE,
)


@hookimpl
def register_stylizers(register: Any) -> None:
    register(SPEC)


__all__ = ["SANetBlock", "SANetTransform", "SANetStylizer", "SANetTrainOptions", "sanet_losses", "import_official",
           "RECIPE", "SPEC", "register_stylizers"]
