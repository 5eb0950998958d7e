"""The "normalised VGG-19" of the AdaIN lineage (``vgg_normalised.pth``), with named taps.

53 Sequential slots keep the official key layout (``0.weight`` ... ``51.bias``). Slot 0 is a 1x1
convolution that maps RGB in [0, 1] to the Caffe-style input VGG was trained on, so callers feed
images in [0, 1] with no further normalisation. Pooling uses ``ceil_mode=True`` like the original.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import WeightsError

# Exclusive end slot of each tap: ``net[:TAPS[name]]`` ends with that ReLU.
TAPS = {"relu1_1": 4, "relu2_1": 11, "relu3_1": 18, "relu4_1": 31, "relu5_1": 44}
ALL_SLOTS = 53

_CONV_SHAPES = {  # slot -> (in, out, kernel)
    0: (3, 3, 1), 2: (3, 64, 3), 5: (64, 64, 3), 9: (64, 128, 3), 12: (128, 128, 3), 16: (128, 256, 3),
    19: (256, 256, 3), 22: (256, 256, 3), 25: (256, 256, 3), 29: (256, 512, 3),
    32: (512, 512, 3), 35: (512, 512, 3), 38: (512, 512, 3), 42: (512, 512, 3),
    45: (512, 512, 3), 48: (512, 512, 3), 51: (512, 512, 3),
}
_POOL_SLOTS = (7, 14, 27, 40)
_VGG_KEY = re.compile(r"^(\d+)\.(weight|bias)$")


def _slot(index: int) -> nn.Module:
    if index in _CONV_SHAPES:
        cin, cout, k = _CONV_SHAPES[index]
        return nn.Conv2d(cin, cout, k)
    if index in _POOL_SLOTS:
        return nn.MaxPool2d(2, 2, ceil_mode=True)
    if index - 1 in _CONV_SHAPES and index - 1 != 0:
        return nn.ReLU()
    return nn.ReflectionPad2d(1)


def _end_slot(upto: str) -> int:
    if upto == "all":
        return ALL_SLOTS
    if upto not in TAPS:
        raise ValueError(f"NormalisedVGG19: unknown tap {upto!r}; choose one of {', '.join(TAPS)} or 'all'")
    return TAPS[upto]


class NormalisedVGG19(nn.Sequential):
    """The normalised VGG-19 up to ``upto`` (a name in :data:`TAPS`, or ``"all"`` for all 53 slots).

    ``forward(x)`` maps RGB ``[B,3,H,W]`` in [0, 1] to the last slot's features; :meth:`taps`
    returns several named layers from one pass. Full net: 20,024,396 parameters; to relu4_1:
    3,505,740; to relu5_1: 12,944,972.
    """

    def __init__(self, upto: str = "relu5_1"):
        self.upto = upto
        super().__init__(*(_slot(i) for i in range(_end_slot(upto))))

    def __getitem__(self, idx):  # type: ignore[override]
        # nn.Sequential slices by calling type(self)(OrderedDict); a slice is a plain Sequential here.
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def taps(self, x: Tensor, names: Sequence[str]) -> list[Tensor]:
        """Features at each of ``names`` (in the order given), running only to the deepest one.

        relu1_1 ``[B,64,H,W]``, relu2_1 ``[B,128,H/2,W/2]``, relu3_1 ``[B,256,H/4,W/4]``,
        relu4_1 ``[B,512,H/8,W/8]``, relu5_1 ``[B,512,H/16,W/16]`` (sizes rounded up).
        """
        unknown = [n for n in names if n not in TAPS]
        if unknown:
            raise ValueError(f"unknown VGG tap(s) {unknown}; choose from {', '.join(TAPS)}")
        ends = {TAPS[n] for n in names}
        if ends and max(ends) > len(self):
            raise ValueError(f"tap(s) {list(names)} are deeper than this VGG, which stops at {self.upto!r}")
        found: dict[int, Tensor] = {}
        for index, layer in enumerate(self):
            if index >= max(ends, default=0):
                break
            x = layer(x)
            if index + 1 in ends:
                found[index + 1] = x
        return [found[TAPS[n]] for n in names]

    @classmethod
    def select_official(cls, state: Mapping[str, Tensor], upto: str = "relu5_1",
                        source: str = "vgg_normalised.pth") -> dict[str, Tensor]:
        """The keys of an official 53-slot state dict that this net (up to ``upto``) needs.

        Deeper slots are dropped; a key that is not a VGG key at all, or a needed key that is absent,
        is a :class:`WeightsError` naming it and ``source``.
        """
        return select_vgg_keys(state, upto=upto, source=source)


def select_vgg_keys(state: Mapping[str, Tensor], upto: str = "relu5_1",
                    source: str = "vgg_normalised.pth") -> dict[str, Tensor]:
    """See :meth:`NormalisedVGG19.select_official`."""
    end = _end_slot(upto)
    foreign = sorted(k for k in state if not (_VGG_KEY.match(k) and int(_VGG_KEY.match(k).group(1)) in _CONV_SHAPES))
    if foreign:
        raise WeightsError(f"{source}: not a normalised VGG-19 state dict — unexpected key(s) "
                           f"{', '.join(foreign[:8])}" + (f" ... ({len(foreign)} in all)" if len(foreign) > 8 else ""))
    needed = [f"{i}.{p}" for i in sorted(_CONV_SHAPES) if i < end for p in ("weight", "bias")]
    missing = [k for k in needed if k not in state]
    if missing:
        raise WeightsError(f"{source}: normalised VGG-19 is missing key(s) {', '.join(missing)} "
                           f"(needed up to {upto})")
    for key in needed:
        index = int(key.split(".")[0])
        cin, cout, k = _CONV_SHAPES[index]
        expected = (cout, cin, k, k) if key.endswith("weight") else (cout,)
        if tuple(state[key].shape) != expected:
            raise WeightsError(f"{source}: key {key} has shape {tuple(state[key].shape)}, expected {expected}")
    return {k: state[k] for k in needed}


def random_official_vgg_state(generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Random tensors in the exact layout of ``vgg_normalised.pth`` (for tests and pipeline runs)."""
    out = {}
    for index, (cin, cout, k) in _CONV_SHAPES.items():
        out[f"{index}.weight"] = torch.randn(cout, cin, k, k, generator=generator) * (2.0 / (cin * k * k)) ** 0.5
        out[f"{index}.bias"] = torch.randn(cout, generator=generator) * 0.01
    return out


__all__ = ["TAPS", "ALL_SLOTS", "NormalisedVGG19", "select_vgg_keys", "random_official_vgg_state"]
