"""``color-hist``: a training-free floor — the joint RGB colour histogram as a style embedding.

Colour is the crudest part of style: a learned style encoder that cannot beat a colour histogram on
the style metrics has learned little beyond colour, and one that *does* beat it on content metrics
(lower is better) shows how much content the histogram itself leaks (little by construction, since
it ignores where colours are). It comes from no paper of this project: it is the floor every
learned number in ``nstzoo compare`` is read against.

::

    images [B,3,H,W] in [0,1] ─► (optional squash to ``size``) ─► bin each pixel: floor(v * bins) per channel
      ─► joint bin index r*bins^2 + g*bins + b ─► counts / (H*W) = p [B, bins^3], sum 1
      ─► sqrt(p) (``transform="sqrt"``) ─► L2-normalise                                    [B, bins^3]

Choice of normalisation (``transform``):

- ``"sqrt"`` (default, Hellinger): with p summing to 1, ``sqrt(p)`` already has unit L2 norm, so the
  cosine between two embeddings is the Bhattacharyya coefficient ``sum sqrt(p_i q_i)`` and the
  Euclidean distance is ``sqrt(2)`` x the Hellinger distance — the standard way to compare
  histograms with inner-product search (faiss ``IndexFlatIP``) and far less dominated by a single
  large bin (a white background) than the raw histogram.
- ``"none"``: the raw histogram, L2-normalised (cosine of the counts).

8 bins per channel (512 joint bins, the default) is the usual trade-off for joint RGB histograms;
``bins`` can be changed. No parameters: ``trainable`` is False and the learner refuses to train it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..specs import EncoderSpec, StyleEncoder, factory_defaults
from ._common import check_images, positive_int, resize_square

NAME = "color-hist"
PAPER = "training-free floor (no paper): joint RGB colour histogram, Hellinger-normalised"


def joint_histogram(images: Tensor, bins: int) -> Tensor:
    """``[B,3,H,W]`` in [0, 1] -> float32 ``[B, bins^3]`` normalised joint RGB histogram (rows sum to 1).

    Values are clamped to [0, 1]; 1.0 falls in the last bin. Bin ``(r, g, b)`` has index
    ``r * bins^2 + g * bins + b``.
    """
    x = images.float().clamp(0.0, 1.0)
    idx = (x * bins).long().clamp_(max=bins - 1)  # [B,3,H,W]
    joint = (idx[:, 0] * bins + idx[:, 1]) * bins + idx[:, 2]  # [B,H,W]
    flat = joint.flatten(1)
    counts = torch.zeros(flat.shape[0], bins ** 3, dtype=torch.float32, device=flat.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    return counts / flat.shape[1]


class ColorHistogram(StyleEncoder):
    """``forward(images [B,3,H,W] in [0,1]) -> [B, bins^3]`` float32, unit L2 norm; no parameters.

    Args:
        bins: bins per channel (joint histogram of ``bins^3`` cells; default 8).
        size: squash images to this square side first (faster on large images; the histogram is a
            proportion, so the size changes it only through resampling); None keeps images as given.
        transform: ``"sqrt"`` (Hellinger; default) or ``"none"``.
    """

    def __init__(self, *, bins: int = 8, size: int | None = None, transform: str = "sqrt"):
        super().__init__()
        positive_int(NAME, "bins", bins)
        if bins > 64:
            raise ConfigError(f"{NAME}: bins={bins} gives {bins ** 3} joint cells; use at most 64 per channel")
        if size is not None:
            positive_int(NAME, "size", size)
        if transform not in ("sqrt", "none"):
            raise ConfigError(f"{NAME}: transform={transform!r}; choose sqrt or none")
        self.config: dict[str, Any] = {"bins": bins, "size": size, "transform": transform}
        self.bins, self.size, self.transform = bins, size, transform
        self.embed_dim = bins ** 3
        self.input_sizes = (size,) if size is not None else ()

    def forward(self, images: Tensor, frozen: Any = None) -> Tensor:
        """``[B,3,H,W]`` float in [0, 1] -> float32 ``[B, bins^3]``, unit L2 norm (``frozen`` is unused)."""
        x = check_images(NAME, images)
        if self.size is not None:
            x = resize_square(x, self.size)
        p = joint_histogram(x, self.bins)
        return F.normalize(p.sqrt() if self.transform == "sqrt" else p, dim=1)


@hookimpl
def register_encoders(register: Any) -> None:
    register(EncoderSpec(
        name=NAME,
        factory=ColorHistogram,
        summary="training-free floor: joint RGB histogram (8x8x8), Hellinger (sqrt) then L2",
        paper=PAPER,
    ))


DEFAULT_CONFIG = factory_defaults(ColorHistogram)


__all__ = ["ColorHistogram", "joint_histogram", "DEFAULT_CONFIG", "register_encoders"]
