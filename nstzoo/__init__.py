"""nstzoo: a plugin zoo of feed-forward neural style transfer, and the ALADIN-NST style learner.

The public API is small::

    from nstzoo import hookimpl, StylizerSpec, EncoderSpec, load_stylizer, load_encoder
"""

__version__ = "0.1.0"

from .errors import NstzooError
from .hookspecs import hookimpl
from .specs import EncoderSpec, Recipe, StyleEncoder, StylizerSpec, TrainParts
from .weights import load_encoder, load_stylizer

__all__ = ["__version__", "hookimpl", "StylizerSpec", "EncoderSpec", "Recipe", "TrainParts", "StyleEncoder", "load_stylizer", "load_encoder", "NstzooError"]
