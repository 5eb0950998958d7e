"""Shared building blocks of the VGG/AdaIN family of stylizers.

- :mod:`.stats`: per-channel moments, AdaIN, mean-variance normalisation.
- :mod:`.vgg`: the 53-slot "normalised VGG-19" of the AdaIN lineage, with named taps.
- :mod:`.decoder`: the mirrored AdaIN decoder (relu4_1 features -> image).
- :mod:`.sizing`: padding to a multiple and capping attention working sizes.
- :mod:`.checkpoints`: reading and recognising official checkpoint files by their keys.
"""

from .decoder import DECODER_CONV_SLOTS, adain_decoder
from .sizing import attention_working_size, pad_to_multiple
from .stats import adain, mean_std, mean_variance_norm
from .vgg import TAPS, NormalisedVGG19, select_vgg_keys

__all__ = [
    "DECODER_CONV_SLOTS", "adain_decoder", "attention_working_size", "pad_to_multiple", "adain", "mean_std",
    "mean_variance_norm", "TAPS", "NormalisedVGG19", "select_vgg_keys",
]
