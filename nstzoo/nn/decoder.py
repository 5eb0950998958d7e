"""The mirrored AdaIN decoder shared by AdaIN, SANet, PAMA, CAST and EFDM."""

from __future__ import annotations

from torch import nn

# Sequential indices of the convolutions: the official checkpoints' keys are "<slot>.weight/bias".
DECODER_CONV_SLOTS = (1, 5, 8, 11, 14, 18, 21, 25, 28)


def _conv(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3)]


def adain_decoder() -> nn.Sequential:
    """The 29-slot decoder: 512-channel relu4_1 features ``[B,512,h,w]`` -> image ``[B,3,8h,8w]``.

    Reflection padding, nearest x2 upsampling, no final activation (the output is not clamped;
    for AdaIN/SANet/PAMA it approximates [0,1], for CAST [-1,1]). 3,505,219 parameters.
    """
    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")  # noqa: E731
    layers: list[nn.Module] = [
        *_conv(512, 256), nn.ReLU(), up(),
        *_conv(256, 256), nn.ReLU(), *_conv(256, 256), nn.ReLU(), *_conv(256, 256), nn.ReLU(),
        *_conv(256, 128), nn.ReLU(), up(),
        *_conv(128, 128), nn.ReLU(), *_conv(128, 64), nn.ReLU(), up(),
        *_conv(64, 64), nn.ReLU(), *_conv(64, 3),
    ]
    decoder = nn.Sequential(*layers)
    assert tuple(i for i, m in enumerate(decoder) if isinstance(m, nn.Conv2d)) == DECODER_CONV_SLOTS
    return decoder


__all__ = ["adain_decoder", "DECODER_CONV_SLOTS"]
