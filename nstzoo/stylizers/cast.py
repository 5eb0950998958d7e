"""CAST (Zhang et al., SIGGRAPH 2022): AdaIN through a contrastively trained encoder, decoder B.

At test time CAST is AdaIN at relu4_1, but its encoder is VGG-shaped and *re-trained* (the release's
``latest_net_AE.pth``; the VGG file its code also loads is overwritten), and it works in [-1, 1].
Official files: ``latest_net_AE.pth`` and ``latest_net_Dec_B.pth`` (CAST_model or UCAST_model:
UCAST has the same keys). ``latest_net_Dec_A.pth`` is the art-to-photo decoder and is refused.

Training is not provided here: CAST trains with two PatchGAN discriminators, a multi-layer style
projector with InfoNCE queues and cycle losses, which is out of scope for
``nstzoo stylizers train`` (see zyxElsa/CAST_pytorch ``train.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..errors import WeightsError
from ..hookspecs import hookimpl
from ..nn.checkpoints import decoder_keys, identify_files, prefixed, remap_exact
from ..nn.decoder import adain_decoder
from ..nn.sizing import pad_to_multiple
from ..nn.stats import adain, mean_std, mean_variance_norm
from ..nn.vgg import TAPS, NormalisedVGG19
from ..specs import StylizerSpec
from ._controls import blend, check_alpha, style_weights_for, weighted_sum

PAPER = ("Yuxin Zhang, Fan Tang, Weiming Dong, Haibin Huang, Chongyang Ma, Tong-Yee Lee, Changsheng Xu. "
         "Domain Enhanced Arbitrary Image Style Transfer via Contrastive Learning. SIGGRAPH 2022. "
         "arXiv:2205.09542")
WEIGHTS_SOURCE = ("https://github.com/zyxElsa/CAST_pytorch (README: CAST_model on Google Drive "
                  "11dZqu95QfnAgkzgR1NTJfQutz8JlwRY8 or BaiduNetdisk 12oPk3195fntMEHdlsHNwkQ, pwd cast; "
                  "UCAST_model on Google Drive 1rU8haiPG2BDhh5BNSwngjMKBKdutDYTJ)")

# Slices of the 53-slot VGG layout that CAST's ADAIN_Encoder keeps as enc_1..enc_4.
_STAGES = (("enc_1", 0, TAPS["relu1_1"]), ("enc_2", TAPS["relu1_1"], TAPS["relu2_1"]),
           ("enc_3", TAPS["relu2_1"], TAPS["relu3_1"]), ("enc_4", TAPS["relu3_1"], TAPS["relu4_1"]))


class CASTEncoder(nn.Module):
    """VGG-19 shaped encoder to relu4_1, split like CAST's ``ADAIN_Encoder`` (keys ``enc_k.j.*``).

    Input ``[B,3,H,W]`` in [-1, 1]; output ``[B,512,ceil(H/8),ceil(W/8)]``.
    """

    def __init__(self) -> None:
        super().__init__()
        layers = list(NormalisedVGG19("relu4_1"))
        for name, start, end in _STAGES:
            setattr(self, name, nn.Sequential(*layers[start:end]))

    def forward(self, x: Tensor) -> Tensor:
        return self.enc_4(self.enc_3(self.enc_2(self.enc_1(x))))


class CASTStylizer(nn.Module):
    """``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

    Images are mapped to [-1, 1] (CAST's ``Normalize(0.5, 0.5)``), stylised, and mapped back with a
    clamp. Any size works (the content is padded to a multiple of 8 and cropped back); note the
    released models were trained and tested at 256x256.
    """

    #: Peak activation bytes per content pixel of one fp32 CPU call (bench/stylize_memory.py --calibrate,
    #: plus ~25 %); the stylize engine plans tiles with it.
    peak_bytes_per_pixel = 1900

    def __init__(self) -> None:
        super().__init__()
        self.encoder = CASTEncoder()
        self.decoder = adain_decoder()

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        padded, (h, w) = pad_to_multiple(content, 8)
        features = adain(self.encoder(padded * 2.0 - 1.0), self.encoder(style * 2.0 - 1.0))
        out = self.decoder(features)[..., :h, :w]
        return ((out + 1.0) * 0.5).clamp(0.0, 1.0)

    def stylize_controlled(self, content: Tensor, styles: Sequence[Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None, whole: Tensor | None = None) -> Tensor:
        """``content [B,3,H,W]``, K ``styles [B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        As AdaIN, in CAST's own encoder space: mixed target statistics, ``alpha`` blended with the
        content feature (``alpha=0`` is decoder B's rendering of the content feature).
        """
        weights = style_weights_for(styles, style_weights)
        alpha = check_alpha(alpha)
        padded, (h, w) = pad_to_multiple(content, 8)
        content_feat = self.encoder(padded * 2.0 - 1.0)
        moments = [mean_std(self.encoder(style * 2.0 - 1.0)) for style in styles]
        target = (mean_variance_norm(content_feat) * weighted_sum([s for _, s in moments], weights)
                  + weighted_sum([m for m, _ in moments], weights))
        out = self.decoder(blend(alpha, target, content_feat))[..., :h, :w]
        return ((out + 1.0) * 0.5).clamp(0.0, 1.0)


def _encoder_key_map() -> dict[str, str]:
    """``enc_k.j.weight`` (official) -> ``encoder.enc_k.j.weight``, for the convs of each stage."""
    encoder = CASTEncoder()
    return {k: f"encoder.{k}" for k in encoder.state_dict()}


def import_official(paths: Sequence[Path]) -> dict[str, Tensor]:
    """``latest_net_AE.pth`` + ``latest_net_Dec_B.pth`` (any order) -> this module's state dict."""
    def is_decoder(path: Path, state: dict) -> bool:
        if any(k.startswith("decoder.") for k in state):
            if "dec_a" in path.name.lower():
                raise WeightsError(f"{path}: this is decoder A (art -> photo); CAST stylises with decoder B",
                                   hint="pass latest_net_Dec_B.pth")
            return True
        return False

    files = identify_files(
        paths,
        roles={"encoder": lambda _p, s: any(k.startswith("enc_") for k in s), "decoder": is_decoder},
        expected_names={"encoder": "latest_net_AE.pth", "decoder": "latest_net_Dec_B.pth"},
    )
    ae_path, ae_state = files["encoder"]
    dec_path, dec_state = files["decoder"]
    encoder = remap_exact(ae_state, _encoder_key_map(), ae_path)
    decoder = remap_exact(dec_state, {f"decoder.{k}": k for k in decoder_keys()}, dec_path)
    return {**encoder, **prefixed(decoder, "decoder.")}


SPEC = StylizerSpec(
    name="cast",
    factory=CASTStylizer,
    summary="CAST: AdaIN through a contrastively re-trained VGG encoder and decoder B, in [-1, 1]",
    paper=PAPER,
    weight_files=("latest_net_AE.pth", "latest_net_Dec_B.pth"),
    import_official=import_official,
    weights_source=WEIGHTS_SOURCE,
    controls=frozenset({"alpha", "style_mix"}),
)


@hookimpl
def register_stylizers(register: Any) -> None:
    register(SPEC)


__all__ = ["CASTEncoder", "CASTStylizer", "import_official", "SPEC", "register_stylizers"]
