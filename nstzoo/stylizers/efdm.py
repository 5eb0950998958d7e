"""EFDM (Zhang et al., CVPR 2022): the AdaIN architecture with AdaIN replaced by exact feature
distribution matching (Sort-Matching) at VGG relu4_1.

Official code: YBZh/EFDM, folder ``ArbitraryStyleTransfer`` (a fork of naoto0804/pytorch-AdaIN,
same networks and same checkpoint layout). Official files:

- ``vgg_normalised.pth``: the 53-slot normalised VGG-19 (keys ``0.weight`` ... ``51.bias``); only
  the slots up to relu4_1 are kept, as the released test script does (``children()[:31]``).
- the EFDM decoder (README: Google Drive / Baidu links): the 29-slot AdaIN decoder saved by
  ``train.py`` as ``decoder_iter_<N>.pth.tar`` (``--max_iter`` defaults to 160000), keys
  ``{1,5,8,11,14,18,21,25,28}.{weight,bias}``. Assumption: the released file keeps that layout
  (the name on the drive is not known offline; files are recognised by their keys, not names).

The matching op itself lives in :mod:`nstzoo.nn.efdm`; how unequal content/style sizes are handled
(the released code asserts equal sizes) is described there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ..hookspecs import hookimpl
from ..nn.efdm import exact_feature_distribution_matching
from ..nn.encoder_decoder import Relu41EncoderDecoder, import_vgg_and_decoder
from ..nn.sizing import pad_to_multiple
from ..specs import StylizerSpec
from ._controls import blend, check_alpha, style_weights_for, to_batch, weighted_sum

PAPER = ("Yabin Zhang, Minghan Li, Ruihuang Li, Kui Jia, Lei Zhang. Exact Feature Distribution Matching "
         "for Arbitrary Style Transfer and Domain Generalization. CVPR 2022. arXiv:2203.07740")
WEIGHTS_SOURCE = ("https://github.com/YBZh/EFDM/tree/main/ArbitraryStyleTransfer (README: EFDM decoder on "
                  "Google Drive https://drive.google.com/file/d/18nJHi8vHVvyRnOGgbNqkWyc61NAhRCzV or Baidu "
                  "https://pan.baidu.com/s/1qHlMiFaIvieAWakh_PCeTQ code vayi; vgg_normalised.pth "
                  "https://drive.google.com/file/d/1EpkBA2K2eYILDSyPTt0fztz59UjAIpZU)")
WEIGHT_FILES = ("vgg_normalised.pth", "decoder_iter_160000.pth.tar")


class EFDMStylizer(Relu41EncoderDecoder):
    """``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

    relu4_1 features of the content take the exact per-channel value distribution of the style's
    (:func:`~nstzoo.nn.efdm.exact_feature_distribution_matching`), then the AdaIN decoder renders
    them (:class:`~nstzoo.nn.encoder_decoder.Relu41EncoderDecoder`). Parameters: VGG to relu4_1
    3,505,740 + decoder 3,505,219 = 7,010,959.

    Args:
        alpha: content-style trade-off in [0, 1] (the released ``--alpha``): the decoder sees
            ``alpha * efdm(c, s) + (1 - alpha) * c``; 0 reconstructs the content.

    Any input size works: the content is reflection-padded to a multiple of 8 (the decoder's
    stride) and the result cropped back; the style is used at its own size (sorting costs
    ``N log N``, so no working-size cap is needed).
    """

    method = "efdm"
    #: Peak activation bytes per content pixel of one fp32 CPU call (bench/stylize_memory.py --calibrate,
    #: plus ~25 %); the stylize engine plans tiles with it.
    peak_bytes_per_pixel = 1400

    def match(self, content_feat: Tensor, style_feat: Tensor) -> Tensor:
        return exact_feature_distribution_matching(content_feat, style_feat)

    def stylize_controlled(self, content: Tensor, styles: Sequence[Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None, whole: Tensor | None = None) -> Tensor:
        """``content [B,3,H,W]``, K ``styles [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        Style interpolation mixes the target distributions: every content position of rank ``k`` gets
        ``sum_j w_j q_j(k)``, the weighted mean of the styles' ``k``-th quantiles (the same rank
        assignment for every style, so this equals ``sum_j w_j efdm(c, s_j)``, the released code's
        interpolation). ``alpha`` blends with the content feature (the released ``--alpha``).
        """
        weights = style_weights_for(styles, style_weights)
        alpha = check_alpha(alpha)
        padded, (h, w) = pad_to_multiple(content, 8)
        content_feat = self.encoder(padded)
        batch = content_feat.shape[0]
        targets = [self.match(content_feat, to_batch(self.encoder(style), batch))
                   for style in styles]
        out = self.decoder(blend(alpha, weighted_sum(targets, weights), content_feat))
        return out[..., :h, :w].clamp(0.0, 1.0)


def import_official(paths: Sequence[Path]) -> dict[str, Tensor]:
    """``vgg_normalised.pth`` + the EFDM decoder (any order, any names) -> this module's state dict.

    Every key is checked: a missing or unexpected decoder key, or a missing / foreign VGG key, is a
    :class:`~nstzoo.errors.WeightsError` naming the file and the key.
    """
    return import_vgg_and_decoder(paths, dict(zip(("vgg", "decoder"), WEIGHT_FILES)))


SPEC = StylizerSpec(
    name="efdm",
    factory=EFDMStylizer,
    summary="EFDM: VGG relu4_1 features given the style's exact per-channel value distribution "
            "(Sort-Matching), then decoded",
    paper=PAPER,
    weight_files=WEIGHT_FILES,
    import_official=import_official,
    default_options={"alpha": 1.0},
    weights_source=WEIGHTS_SOURCE,
    controls=frozenset({"alpha", "style_mix"}),
)


@hookimpl
def register_stylizers(register: Any) -> None:
    register(SPEC)


__all__ = ["EFDMStylizer", "import_official", "SPEC", "register_stylizers"]
