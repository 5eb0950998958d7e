"""The relu4_1 encoder-decoder that AdaIN and EFDM are built on: they differ only in how the
content's features are matched to the style's, so the architecture and its official import live here once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn

from ..errors import ConfigError
from .checkpoints import decoder_keys, identify_files, prefixed, remap_exact
from .decoder import adain_decoder
from .sizing import pad_to_multiple
from .vgg import NormalisedVGG19, select_vgg_keys


class Relu41EncoderDecoder(nn.Module):
    """Normalised VGG-19 to relu4_1, a feature-matching op, the :func:`adain_decoder`.

    ``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1]. Subclasses
    define :meth:`match` (``content_feat``, ``style_feat`` -> target relu4_1 features) and
    ``method`` (their registered name, for error messages). Any input size works: the content is
    reflection-padded to a multiple of 8 (the decoder's stride) and the result cropped back.

    Args:
        alpha: content-style trade-off in [0, 1]: the decoder sees ``alpha * match(c, s) +
            (1 - alpha) * c``; 1 is full stylisation, 0 reconstructs the content.
    """

    method = "relu4_1 encoder-decoder"

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"{self.method}: option alpha must be in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.encoder = NormalisedVGG19("relu4_1")
        self.decoder = adain_decoder()

    def match(self, content_feat: Tensor, style_feat: Tensor) -> Tensor:
        """Target relu4_1 features ``[B,512,h,w]`` from the content's and the style's (``[B or 1,512,h',w']``)."""
        raise NotImplementedError

    def transfer_features(self, content: Tensor, style: Tensor, alpha: float | None = None) -> Tensor:
        """relu4_1 target features ``[B,512,ceil(H/8),ceil(W/8)]`` for images in [0, 1]."""
        alpha = self.alpha if alpha is None else alpha
        content_feat = self.encoder(content)
        target = self.match(content_feat, self.encoder(style))
        return alpha * target + (1.0 - alpha) * content_feat

    def stylize_unclamped(self, content: Tensor, style: Tensor) -> Tensor:
        """Raw decoder output for a content whose sides are multiples of 8 (no padding, no clamp)."""
        return self.decoder(self.transfer_features(content, style))

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        padded, (h, w) = pad_to_multiple(content, 8)
        return self.stylize_unclamped(padded, style)[..., :h, :w].clamp(0.0, 1.0)


def import_vgg_and_decoder(paths: Sequence[Path], expected_names: Mapping[str, str]) -> dict[str, Tensor]:
    """A normalised-VGG file and a 29-slot decoder file (any order, recognised by their keys) -> the
    state dict of a :class:`Relu41EncoderDecoder` (``encoder.*`` up to relu4_1, ``decoder.*``).

    ``expected_names`` (``{"vgg": ..., "decoder": ...}``) only phrases the errors. A missing or
    unexpected decoder key, or a missing / foreign VGG key, is a
    :class:`~nstzoo.errors.WeightsError` naming the file and the key.
    """
    files = identify_files(
        paths,
        roles={"vgg": lambda _p, s: "0.weight" in s, "decoder": lambda _p, s: "1.weight" in s and "0.weight" not in s},
        expected_names=dict(expected_names),
    )
    vgg_path, vgg_state = files["vgg"]
    dec_path, dec_state = files["decoder"]
    vgg = select_vgg_keys(vgg_state, upto="relu4_1", source=str(vgg_path))
    decoder = remap_exact(dec_state, {k: k for k in decoder_keys()}, dec_path)
    return {**prefixed(vgg, "encoder."), **prefixed(decoder, "decoder.")}


__all__ = ["Relu41EncoderDecoder", "import_vgg_and_decoder"]
