"""AdaAttN (Liu et al., ICCV 2021): attention-weighted mean and standard deviation at relu3_1,
relu4_1 and relu5_1 of the normalised VGG-19, with "shallow" multi-level keys.

Official code: Huage001/AdaAttN (``models/networks.py``, ``models/adaattn_model.py``), released
model trained and tested with ``--shallow_layer --skip_connection_3`` (``test_adaattn.sh``,
``predict.py``); that is the only configuration implemented and imported here.

Architecture (as released):

- Encoder: the normalised VGG-19 (``vgg_normalised.pth``) sliced ``[:4] [4:11] [11:18] [18:31]
  [31:44]`` -> relu1_1 (64 ch) ... relu5_1 (512 ch). Input RGB in [0, 1].
- Keys ("shallow features"): for layer ``k``, every shallower relu*_1 map is resized to layer
  ``k``'s size with nearest interpolation, each map is mean-variance normalised, and all are
  concatenated shallow-first: 448 channels at relu3_1, 960 at relu4_1, 1472 at relu5_1.
- AdaAttN block (``f``, ``g``: 1x1 convs on the content / style keys; ``h``: 1x1 conv on the raw
  style feature; softmax over style positions): ``S = softmax(f(Kc)^T g(Ks))``,
  ``mean = S h(Fs)``, ``std = sqrt(relu(S h(Fs)^2 - mean^2))``, output ``std * mvn(Fc) + mean``.
  No 1/sqrt(d) scaling, no residual.
- ``net_adaattn_3``: an AdaAttN block on relu3_1 (value 256 ch, keys 448 ch); its output is the
  decoder's skip input.
- ``net_transformer``: ``merge_conv(merge_conv_pad(attn_adain_4_1(...) + upsample5_1(attn_adain_5_1(...))))``
  (nearest x2 upsampling, reflection pad 1, 3x3 conv 512->512, no activation).
- ``net_decoder``: ``decoder_layer_1`` (pad, conv 512->256, ReLU, up x2) at relu4_1 scale, then
  ``decoder_layer_2`` on ``cat(decoder_layer_1(cs), adaattn_3 output)`` (512 ch): convs
  512->256, 256->256, 256->256, 256->128, up, 128->128, 128->64, up, 64->64, 64->3 (reflection pads,
  ReLUs, no final activation). The official test clips the output to [0, 1].

Official files (README: Google Drive ``AdaAttN_model.zip`` -> ``checkpoints/AdaAttN/``, plus
``vgg_normalised.pth``), raw state dicts saved from ``net.module.cpu().state_dict()`` (no
``module.`` prefix; one is stripped if present). Key layout, from the module attributes of
``models/networks.py`` (assumption: the released zip holds exactly these, as ``load_networks``
loads them strictly):

- ``latest_net_adaattn_3.pth``: ``f.weight [448,448,1,1]``, ``f.bias [448]``, ``g.*`` (same),
  ``h.weight [256,256,1,1]``, ``h.bias [256]`` (``sm`` is a parameter-free softmax).
- ``latest_net_transformer.pth``: ``attn_adain_4_1.{f,g}.weight [960,960,1,1]`` (+ bias [960]),
  ``attn_adain_4_1.h.weight [512,512,1,1]``, ``attn_adain_5_1.{f,g}.weight [1472,1472,1,1]``,
  ``attn_adain_5_1.h.weight [512,512,1,1]`` (+ biases), ``merge_conv.weight [512,512,3,3]``,
  ``merge_conv.bias [512]``.
- ``latest_net_decoder.pth``: ``decoder_layer_1.1.*`` (conv 512->256) and
  ``decoder_layer_2.{1,4,7,10,14,17,21,24}.*`` (Sequential slots of the convs listed above).
- ``vgg_normalised.pth``: keys ``0.weight`` ... ``51.bias``; slots up to relu5_1 are kept.

Deliberate differences from the released forward pass, none of which changes the released 512x512
test setting:

- Style sampling: when a style map has more positions than a block's ``max_sample`` (4096 for
  ``adaattn_3``, 65536 for the transformer's blocks, as released), the released code calls
  ``torch.manual_seed(6666)`` (the test-time seed) and keeps ``torch.randperm(N)[:max_sample]``.
  The same permutation is drawn here from a private CPU generator seeded 6666, so results match
  the released ones without touching the global RNG.
- Sizes: the released code needs sides that are multiples of 16 (relu5_1, upsampled, must match
  relu4_1); here the content is reflection-padded to a multiple of 16 and cropped back. Images
  larger than ``max_tokens`` relu4_1 positions are stylised at a capped size (the SANet/PAMA
  policy, :mod:`nstzoo.nn.sizing`), and the attention is evaluated in chunks of content positions
  (exact: softmax rows are independent), so memory stays bounded.
- Precision: under autocast each block's attention runs in the module's own dtype (float32),
  because the variance is a difference of two averages that half precision cancels away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, WeightsError
from ..hookspecs import hookimpl
from ..nn.checkpoints import identify_files, prefixed, remap_exact
from ..nn.sizing import attention_working_size, pad_to_multiple, resize_to
from ..nn.stats import mean_variance_norm
from ..nn.vgg import NormalisedVGG19, select_vgg_keys
from ..specs import StylizerSpec
from ._controls import blend, check_alpha, style_weights_for, to_batch, weighted_sum

PAPER = ("Songhua Liu, Tianwei Lin, Dongliang He, Fu Li, Meiling Wang, Xin Li, Zhengxing Sun, Qian Li, "
         "Errui Ding. AdaAttN: Revisit Attention Mechanism in Arbitrary Neural Style Transfer. ICCV 2021. "
         "arXiv:2108.03647")
WEIGHTS_SOURCE = ("https://github.com/Huage001/AdaAttN (README: AdaAttN_model.zip "
                  "https://drive.google.com/file/d/1XvpD1eI4JeCBIaW5uwMT6ojF_qlzM_lo -> checkpoints/AdaAttN/"
                  "latest_net_{decoder,transformer,adaattn_3}.pth; vgg_normalised.pth "
                  "https://drive.google.com/file/d/1BinnwM5AmIcVubr16tPTqxMjUCE8iu5M)")
WEIGHT_FILES = ("vgg_normalised.pth", "latest_net_decoder.pth", "latest_net_transformer.pth",
                "latest_net_adaattn_3.pth")

LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
LAYER_CHANNELS = (64, 128, 256, 512, 512)
OFFICIAL_SEED = 6666  # AdaAttNModel.seed at test time (training re-draws it every step)
MAX_SAMPLE_3 = 64 * 64  # AdaAttNModel.max_sample, given to net_adaattn_3
MAX_SAMPLE_DEFAULT = 256 * 256  # networks.AdaAttN default, used by the transformer's blocks
MIN_SIDE = 32  # relu5_1 (1/16) must keep 2 rows and columns for its reflection padding
DEFAULT_MAX_TOKENS = 4096  # relu4_1 positions: a 512x512 image, the released test size
ATTENTION_CHUNK = 1 << 24  # attention-map elements per sample evaluated at once (64 MiB fp32)


def key_channels(layer: int) -> int:
    """Channels of the shallow key at ``LAYERS[layer]``: the sum of all relu*_1 up to it (448/960/1472)."""
    return sum(LAYER_CHANNELS[: layer + 1])


def shallow_key(feats: Sequence[Tensor], layer: int) -> Tensor:
    """The released ``get_key(feats, layer, need_shallow=True)``.

    Args:
        feats: relu1_1 ... relu5_1 ``[B,C_i,H_i,W_i]`` (at least ``layer + 1`` of them).
        layer: index of the deepest layer (2 = relu3_1, 3 = relu4_1, 4 = relu5_1).

    Returns:
        ``[B, key_channels(layer), H_layer, W_layer]``: each shallower map resized (nearest) to the
        deepest map's size, every map mean-variance normalised, concatenated shallow-first.
    """
    h, w = feats[layer].shape[-2:]
    parts = [mean_variance_norm(F.interpolate(f, size=(h, w), mode="nearest")) for f in feats[:layer]]
    parts.append(mean_variance_norm(feats[layer]))
    return torch.cat(parts, dim=1)


def official_sample_index(count: int, keep: int, device: torch.device) -> Tensor:
    """The style positions the released code keeps: ``randperm(count)[:keep]`` after ``manual_seed(6666)``.

    Drawn on the CPU from a private generator (same stream as the global one after
    ``torch.manual_seed``), then copied asynchronously from pinned memory on CUDA so that
    ``forward`` does not wait for the device.
    """
    index = torch.randperm(count, generator=torch.Generator().manual_seed(OFFICIAL_SEED))[:keep]
    if device.type == "cuda":
        return index.pin_memory().to(device, non_blocking=True)
    return index.to(device)


class AdaAttN(nn.Module):
    """Adaptive attention normalisation: per content position, the attention-weighted style mean and std.

    ``forward(content [B,C,Hc,Wc], style [B,C,Hs,Ws], content_key [B,K,Hc,Wc], style_key [B,K,Hs,Ws])``
    -> ``[B,C,Hc,Wc]`` = ``std * mvn(content) + mean`` where, with ``S = softmax_s(f(Kc) . g(Ks))``
    ``[B,Hc*Wc,Ns]``, ``mean = S V`` and ``std = sqrt(relu(S V^2 - mean^2))``, ``V = h(style)``.
    Keys are the shallow keys of :func:`shallow_key`. Submodule names follow the official files.

    Args:
        in_planes: ``C``, channels of content, style and value.
        key_planes: ``K``, channels of the keys (default ``C``).
        max_sample: style positions kept at most (sampled as the released code does).
    """

    def __init__(self, in_planes: int, key_planes: int | None = None, max_sample: int = MAX_SAMPLE_DEFAULT):
        super().__init__()
        key_planes = in_planes if key_planes is None else key_planes
        self.f = nn.Conv2d(key_planes, key_planes, 1)
        self.g = nn.Conv2d(key_planes, key_planes, 1)
        self.h = nn.Conv2d(in_planes, in_planes, 1)
        self.max_sample = int(max_sample)
        self.chunk_elements = ATTENTION_CHUNK

    def attention_moments(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Attention-weighted mean and std of ``value``.

        ``query [B,Nc,K]``, ``key [B,K,Ns]``, ``value [B,Ns,C]`` -> mean, std ``[B,Nc,C]``. Content
        positions are processed in chunks of ``chunk_elements // Ns`` rows; each softmax row only
        involves its own query, so chunking changes nothing but peak memory.
        """
        squared = value * value
        rows = max(1, self.chunk_elements // key.shape[-1])
        means, seconds = [], []
        for start in range(0, query.shape[1], rows):
            attention = torch.softmax(torch.bmm(query[:, start:start + rows], key), dim=-1)
            means.append(torch.bmm(attention, value))
            seconds.append(torch.bmm(attention, squared))
        mean = means[0] if len(means) == 1 else torch.cat(means, dim=1)
        second = seconds[0] if len(seconds) == 1 else torch.cat(seconds, dim=1)
        return mean, torch.sqrt(torch.relu(second - mean * mean))

    @staticmethod
    def fused_attention_moments(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`attention_moments` by one fused attention call (same shapes in and out).

        ``softmax(Q K) [V, V^2]`` in one ``scaled_dot_product_attention`` (unscaled, as released): the
        ``[B,Nc,Ns]`` map is never materialised, so memory is ``O(Nc*C)`` and the map's softmax does
        not stream through memory; fp32 results differ from the chunked ``bmm`` path by summation
        order only (checked to 1e-5 in the tests).
        """
        channels = value.shape[-1]
        both = torch.cat([value, value * value], dim=-1)[:, None]
        out = F.scaled_dot_product_attention(query[:, None], key.transpose(1, 2)[:, None], both, scale=1.0)[:, 0]
        mean, second = out[..., :channels], out[..., channels:]
        return mean, torch.sqrt(torch.relu(second - mean * mean))

    def forward(self, content: Tensor, style: Tensor, content_key: Tensor, style_key: Tensor,
                fused: bool = False) -> Tensor:
        """See the class docstring; ``fused=True`` computes the moments by :meth:`fused_attention_moments`
        (the ``nstzoo stylize`` path), else as the released code does, chunked."""
        b, _, hc, wc = content.shape
        # Autocast off, inputs in the weights' dtype: float32 for a float32 module under autocast
        # (see the module docstring), the module's own dtype otherwise (.half(), .double()).
        dtype = self.f.weight.dtype
        with torch.autocast(device_type=content.device.type, enabled=False):
            query = self.f(content_key.to(dtype)).flatten(2).transpose(1, 2)  # [B,Nc,K]
            key = self.g(style_key.to(dtype)).flatten(2)  # [B,K,Ns]
            value = self.h(style.to(dtype)).flatten(2)  # [B,C,Ns]
            if key.shape[-1] > self.max_sample:
                index = official_sample_index(key.shape[-1], self.max_sample, key.device)
                key, value = key[:, :, index], value[:, :, index]
            moments = self.fused_attention_moments if fused else self.attention_moments
            mean, std = moments(query, key, value.transpose(1, 2))
            mean = mean.transpose(1, 2).reshape(b, -1, hc, wc)
            std = std.transpose(1, 2).reshape(b, -1, hc, wc)
            return std * mean_variance_norm(content.to(dtype)) + mean


class AdaAttNTransformer(nn.Module):
    """The released ``Transformer(in_planes=512, key_planes=960, shallow_layer=True)``.

    ``forward(c4, s4, c5, s5, c4_key, s4_key, c5_key, s5_key) -> [B,512,H4,W4]``: AdaAttN at relu4_1
    plus the nearest-upsampled AdaAttN at relu5_1, merged by a reflection-padded 3x3 conv. The
    content's relu5_1 map must be exactly half its relu4_1 map (sides multiples of 16).
    """

    def __init__(self) -> None:
        super().__init__()
        self.attn_adain_4_1 = AdaAttN(512, key_planes=key_channels(3))
        self.attn_adain_5_1 = AdaAttN(512, key_planes=key_channels(4))
        self.upsample5_1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.merge_conv_pad = nn.ReflectionPad2d(1)
        self.merge_conv = nn.Conv2d(512, 512, 3)

    def forward(self, content4_1: Tensor, style4_1: Tensor, content5_1: Tensor, style5_1: Tensor,
                content4_1_key: Tensor, style4_1_key: Tensor, content5_1_key: Tensor,
                style5_1_key: Tensor, fused: bool = False) -> Tensor:
        deep = self.upsample5_1(self.attn_adain_5_1(content5_1, style5_1, content5_1_key, style5_1_key, fused=fused))
        shallow = self.attn_adain_4_1(content4_1, style4_1, content4_1_key, style4_1_key, fused=fused)
        return self.merge_conv(self.merge_conv_pad(shallow + deep))


def _pad_conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]


class AdaAttNDecoder(nn.Module):
    """The released ``Decoder(skip_connection_3=True)``.

    ``forward(cs [B,512,h,w], skip [B,256,2h,2w]) -> [B,3,8h,8w]``: ``decoder_layer_1`` brings the
    transformer output to relu3_1 scale, the AdaAttN relu3_1 output is concatenated, and
    ``decoder_layer_2`` renders the image (no final activation). 4,095,043 parameters.
    """

    CONV_SLOTS = {"decoder_layer_1": (1,), "decoder_layer_2": (1, 4, 7, 10, 14, 17, 21, 24)}

    def __init__(self) -> None:
        super().__init__()
        relu, up = nn.ReLU, lambda: nn.Upsample(scale_factor=2, mode="nearest")  # noqa: E731
        self.decoder_layer_1 = nn.Sequential(*_pad_conv(512, 256), relu(), up())
        self.decoder_layer_2 = nn.Sequential(
            *_pad_conv(512, 256), relu(), *_pad_conv(256, 256), relu(), *_pad_conv(256, 256), relu(),
            *_pad_conv(256, 128), relu(), up(),
            *_pad_conv(128, 128), relu(), *_pad_conv(128, 64), relu(), up(),
            *_pad_conv(64, 64), relu(), *_pad_conv(64, 3),
        )
        for name, slots in self.CONV_SLOTS.items():
            seq = getattr(self, name)
            assert tuple(i for i, m in enumerate(seq) if isinstance(m, nn.Conv2d)) == slots

    def forward(self, cs: Tensor, skip: Tensor) -> Tensor:
        up = self.decoder_layer_1(cs)
        # Under autocast the AdaAttN output is float32 (see AdaAttN.forward) and the conv output is not.
        return self.decoder_layer_2(torch.cat((up, skip.to(up.dtype)), dim=1))


def _working_size(h: int, w: int, max_tokens: int) -> tuple[int, int]:
    h2, w2 = attention_working_size(h, w, max_tokens)
    if min(h2, w2) < MIN_SIDE:
        scale = MIN_SIDE / min(h2, w2)
        h2, w2 = max(MIN_SIDE, round(h2 * scale)), max(MIN_SIDE, round(w2 * scale))
    return h2, w2


class AdaAttNStylizer(nn.Module):
    """``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

    Parameters: VGG to relu5_1 12,944,972 + ``adaattn_3`` 468,096 + transformer 9,066,752 +
    decoder 4,095,043 = 26,574,863.

    Any size works: the content is reflection-padded to a multiple of 16 and the result cropped
    back. Memory policy (as SANet/PAMA): content or style with more than ``max_tokens`` relu4_1
    positions (``H*W/64``) is resized, aspect kept, to fit; the content is stylised at that size and
    the result resized bilinearly back to ``H x W``. The default, 4096 (512x512 px, the released
    test size), leaves the released setting untouched. Attention at relu3_1 then sees at most
    ``4 * max_tokens`` content positions against at most 4096 sampled style positions, evaluated in
    chunks of 2**24 map elements per sample. Sides below 32 px are upsampled (relu5_1 needs two
    rows for its reflection padding).

    Args:
        max_tokens: relu4_1 positions allowed for content and for style (each).
    """

    #: Peak activation bytes per content pixel of one fp32 CPU call; the stylize engine plans tiles with it.
    #: bench/stylize_memory.py: ~3,900 per pixel of an 832-896 px window (above the 512-px calibration:
    #: the shallow keys concatenate four resized maps), plus ~15 %.
    peak_bytes_per_pixel = 4500
    #: Channels-last convolutions cost more in the many flatten/transpose copies of the shallow keys than
    #: they save (bench/stylize_speed.py: 1.6x slower batched); the stylize engine keeps NCHW.
    prefer_channels_last = False

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS):
        super().__init__()
        if int(max_tokens) < 1:
            raise ConfigError(f"adaattn: option max_tokens must be >= 1, got {max_tokens!r}")
        self.max_tokens = int(max_tokens)
        self.encoder = NormalisedVGG19("relu5_1")
        self.adaattn_3 = AdaAttN(256, key_planes=key_channels(2), max_sample=MAX_SAMPLE_3)
        self.transformer = AdaAttNTransformer()
        self.decoder = AdaAttNDecoder()

    def encode(self, images: Tensor) -> list[Tensor]:
        """relu1_1 ``[B,64,H,W]`` ... relu5_1 ``[B,512,H/16,W/16]`` of images in [0, 1] (sizes rounded up)."""
        return self.encoder.taps(images, LAYERS)

    def stylize_padded(self, content: Tensor, style: Tensor) -> Tensor:
        """Raw decoder output ``[B,3,H,W]`` for a content whose sides are multiples of 16 (no resize, no clamp)."""
        c, s = self.encode(content), self.encode(style)
        skip = self.adaattn_3(c[2], s[2], shallow_key(c, 2), shallow_key(s, 2))
        cs = self.transformer(c[3], s[3], c[4], s[4], shallow_key(c, 3), shallow_key(s, 3),
                              shallow_key(c, 4), shallow_key(s, 4))
        return self.decoder(cs, skip)

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        h, w = content.shape[-2:]
        style = resize_to(style, _working_size(*style.shape[-2:], self.max_tokens))
        padded, (wh, ww) = pad_to_multiple(resize_to(content, _working_size(h, w, self.max_tokens)), 16)
        out = self.stylize_padded(padded, style)[..., :wh, :ww]
        return resize_to(out, (h, w)).clamp(0.0, 1.0)

    def stylize_controlled(self, content: Tensor, styles: Sequence[Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None, whole: Tensor | None = None) -> Tensor:
        """``content [B,3,H,W]``, K ``styles [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        The content is stylised at its own size (sides below 32 px upsampled; attention is fused, so
        memory stays bounded; callers tile large images); styles keep the ``max_tokens`` cap and are
        encoded once per call, their features broadcast over the batch. Interpolation mixes both
        AdaAttN outputs (transformer and relu3_1 skip) over styles; ``alpha`` blends them with the
        content's relu4_1 and relu3_1 features before decoding.
        """
        weights = style_weights_for(styles, style_weights)
        alpha = check_alpha(alpha)
        h, w = content.shape[-2:]
        work = (h, w) if min(h, w) >= MIN_SIDE else _working_size(h, w, h * w)
        padded, (wh, ww) = pad_to_multiple(resize_to(content, work), 16)
        c = self.encode(padded)
        batch = padded.shape[0]
        c_keys = {layer: shallow_key(c, layer) for layer in (2, 3, 4)}
        skips, transformed = [], []
        for style in styles:
            s = self.encode(resize_to(style, _working_size(*style.shape[-2:], self.max_tokens)))
            s_keys = {layer: to_batch(shallow_key(s, layer), batch) for layer in (2, 3, 4)}
            s = [to_batch(f, batch) for f in s]
            skips.append(self.adaattn_3(c[2], s[2], c_keys[2], s_keys[2], fused=True))
            transformed.append(self.transformer(c[3], s[3], c[4], s[4], c_keys[3], s_keys[3], c_keys[4], s_keys[4],
                                                fused=True))
        skip = blend(alpha, weighted_sum(skips, weights), c[2])
        cs = blend(alpha, weighted_sum(transformed, weights), c[3])
        out = self.decoder(cs, skip)[..., :wh, :ww]
        return resize_to(out, (h, w)).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- official import
def _block_shapes(in_planes: int, key_planes: int) -> dict[str, tuple[int, ...]]:
    return {"f.weight": (key_planes, key_planes, 1, 1), "f.bias": (key_planes,),
            "g.weight": (key_planes, key_planes, 1, 1), "g.bias": (key_planes,),
            "h.weight": (in_planes, in_planes, 1, 1), "h.bias": (in_planes,)}


def _conv_shapes(name: str, cin: int, cout: int, k: int = 3) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (cout, cin, k, k), f"{name}.bias": (cout,)}


ADAATTN_3_SHAPES = _block_shapes(256, key_channels(2))
TRANSFORMER_SHAPES = {
    **{f"attn_adain_4_1.{k}": v for k, v in _block_shapes(512, key_channels(3)).items()},
    **{f"attn_adain_5_1.{k}": v for k, v in _block_shapes(512, key_channels(4)).items()},
    **_conv_shapes("merge_conv", 512, 512),
}
DECODER_SHAPES = {
    **_conv_shapes("decoder_layer_1.1", 512, 256),
    **_conv_shapes("decoder_layer_2.1", 512, 256), **_conv_shapes("decoder_layer_2.4", 256, 256),
    **_conv_shapes("decoder_layer_2.7", 256, 256), **_conv_shapes("decoder_layer_2.10", 256, 128),
    **_conv_shapes("decoder_layer_2.14", 128, 128), **_conv_shapes("decoder_layer_2.17", 128, 64),
    **_conv_shapes("decoder_layer_2.21", 64, 64), **_conv_shapes("decoder_layer_2.24", 64, 3),
}
_VARIANT_HINT = ("the released AdaAttN model was trained with --shallow_layer --skip_connection_3; "
                 "checkpoints of other configurations have other shapes and are not supported")


def _checked(state: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, ...]], source: Path) -> dict[str, Tensor]:
    """Exactly the keys of ``shapes`` with exactly those shapes, else a WeightsError naming the key."""
    out = remap_exact(state, {k: k for k in shapes}, source)
    for key, expected in shapes.items():
        if tuple(out[key].shape) != expected:
            raise WeightsError(f"{source}: key {key} has shape {tuple(out[key].shape)}, expected {expected}",
                               hint=_VARIANT_HINT)
    return out


def import_official(paths: Sequence[Path]) -> dict[str, Tensor]:
    """``vgg_normalised.pth``, ``latest_net_decoder.pth``, ``latest_net_transformer.pth``,
    ``latest_net_adaattn_3.pth`` (any order, recognised by their keys) -> this module's state dict.

    Every key and shape is checked; a missing, unexpected or misshapen key is a
    :class:`~nstzoo.errors.WeightsError` naming the file and the key.
    """
    files = identify_files(
        paths,
        roles={
            "transformer": lambda _p, s: any(k.startswith(("attn_adain_", "merge_conv.")) for k in s),
            "decoder": lambda _p, s: any(k.startswith("decoder_layer_") for k in s),
            "adaattn_3": lambda _p, s: any(k.startswith(("f.", "g.", "h.")) for k in s),
            "vgg": lambda _p, s: "0.weight" in s,
        },
        expected_names={"vgg": WEIGHT_FILES[0], "decoder": WEIGHT_FILES[1], "transformer": WEIGHT_FILES[2],
                        "adaattn_3": WEIGHT_FILES[3]},
    )
    state: dict[str, Tensor] = {}
    for role, shapes in (("adaattn_3", ADAATTN_3_SHAPES), ("transformer", TRANSFORMER_SHAPES),
                         ("decoder", DECODER_SHAPES)):
        path, raw = files[role]
        state.update(prefixed(_checked(raw, shapes, path), f"{role}."))
    vgg_path, vgg_state = files["vgg"]
    state.update(prefixed(select_vgg_keys(vgg_state, upto="relu5_1", source=str(vgg_path)), "encoder."))
    return state


SPEC = StylizerSpec(
    name="adaattn",
    factory=AdaAttNStylizer,
    summary="AdaAttN: attention-weighted style mean/std per position at VGG relu3_1-relu5_1 with "
            "multi-level keys, fused and decoded",
    paper=PAPER,
    weight_files=WEIGHT_FILES,
    import_official=import_official,
    default_options={"max_tokens": DEFAULT_MAX_TOKENS},
    weights_source=WEIGHTS_SOURCE,
    controls=frozenset({"alpha", "style_mix"}),
)


@hookimpl
def register_stylizers(register: Any) -> None:
    register(SPEC)


__all__ = ["AdaAttN", "AdaAttNTransformer", "AdaAttNDecoder", "AdaAttNStylizer", "shallow_key",
           "official_sample_index", "import_official", "SPEC", "register_stylizers"]
