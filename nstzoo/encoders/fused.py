"""``fused``: concatenation of several encoders' normalised embeddings (ALADIN's "Fused", paper 002 §5.6, Table 4).

ALADIN concatenates its style embedding with a discriminatively trained ResNet-50 embedding, "given
their information appeared complementary", for a ~4% gain. Here any registered encoders can be
fused, each built through the registry from ``{"name": ..., "options": {...}}``::

    images ─► encoder_1 ─► e_1 [B, D_1] ─► L2-normalise ─► x w_1 ─┐
    images ─► encoder_2 ─► e_2 [B, D_2] ─► L2-normalise ─► x w_2 ─┼─► concatenate ─► L2-normalise   [B, sum D_i]
    ...                                                           ┘

Each part is normalised before weighting, so ``weights`` alone decide each part's share: the cosine
of two fused embeddings is ``sum_i w_i^2 cos_i / sum_i w_i^2`` — a weighted mean of the parts'
cosines (equal weights: their plain mean, which is what ALADIN's concatenation of two unit vectors
gives).

Training (``nstzoo train --encoder fused``) trains the parts that have trainable parameters, on the
contrastive loss of the *fused* embedding; the parts' auxiliary losses (ALADIN's reconstruction) are
summed; frozen features are computed per part. ``export_config()`` nests each part's own
``export_config()``, so an export rebuilds every part without weight files.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..specs import EncoderSpec, StyleEncoder

NAME = "fused"
PAPER = ("D. Ruta et al. ALADIN: All Layer Adaptive Instance Normalization for Fine-grained Style Similarity. "
         "ICCV 2021, §5.6 (fused embeddings)")
EXAMPLE = '{"encoders": [{"name": "aladin", "options": {}}, {"name": "vgg-gram", "options": {"vgg": "vgg16-hed"}}]}'
DEFAULT_CONFIG: dict[str, Any] = {"encoders": None, "weights": None}


def _build_part(index: int, item: Any) -> tuple[str, StyleEncoder]:
    from ..registry import get_registry

    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise ConfigError(f"{NAME}: encoders[{index}] must be a mapping with a 'name' (and optional 'options'), "
                          f"got {item!r}", hint=f"e.g. {EXAMPLE}")
    extra = sorted(set(item) - {"name", "options"})
    if extra:
        raise ConfigError(f"{NAME}: encoders[{index}] has unknown key(s) {', '.join(extra)}; "
                          "only 'name' and 'options' are read")
    name, options = item["name"], item.get("options") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{NAME}: encoders[{index}].options must be a mapping, got {options!r}")
    return name, get_registry().build_encoder(name, options)


class Fused(StyleEncoder):
    """``forward(images [B,3,H,W] in [0,1]) -> [B, sum D_i]`` float32, unit L2 norm.

    Args:
        encoders: two or more ``{"name": registered encoder, "options": {factory kwargs}}``.
        weights: one positive weight per part (default all 1.0), applied after each part's L2 norm.
    """

    def __init__(self, *, encoders: Sequence[Mapping[str, Any]] | None = None,
                 weights: Sequence[float] | None = None):
        super().__init__()
        if encoders is None or isinstance(encoders, (str, Mapping)) or len(encoders) < 2:
            raise ConfigError(f"{NAME}: give two or more encoders to fuse, got {encoders!r}", hint=f"e.g. {EXAMPLE}")
        built = [_build_part(i, item) for i, item in enumerate(encoders)]
        weights = [1.0] * len(built) if weights is None else list(weights)
        if len(weights) != len(built):
            raise ConfigError(f"{NAME}: {len(weights)} weights for {len(built)} encoders")
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0):
                raise ConfigError(f"{NAME}: weights must be positive finite numbers, got {weights!r}")
        self.names = [name for name, _ in built]
        self.parts = nn.ModuleList(part for _, part in built)
        self.weights = [float(w) for w in weights]
        self.embed_dim = sum(int(p.embed_dim) for p in self.parts)
        self.input_sizes = tuple(sorted({s for p in self.parts for s in p.input_sizes}, reverse=True))
        self.config: dict[str, Any] = {
            "encoders": [{"name": n, "options": copy.deepcopy(dict(item.get("options") or {}))}
                         for n, item in zip(self.names, encoders)],
            "weights": self.weights,
        }

    def export_config(self) -> dict[str, Any]:
        """Each part's own ``export_config()`` (no weight files), nested, with the weights."""
        return {"encoders": [{"name": n, "options": p.export_config()} for n, p in zip(self.names, self.parts)],
                "weights": list(self.weights)}

    def fuse(self, embeddings: Sequence[Tensor]) -> Tensor:
        """Parts' embeddings ``[B, D_i]`` -> ``[B, sum D_i]``: each normalised, weighted, concatenated, renormalised."""
        scaled = [w * F.normalize(e.float(), dim=1) for w, e in zip(self.weights, embeddings)]
        return F.normalize(torch.cat(scaled, dim=1), dim=1)

    def frozen_features(self, images: Tensor) -> tuple[Any, ...] | None:
        """One entry per part (its own ``frozen_features``), or None when no part has any."""
        found = tuple(p.frozen_features(images) for p in self.parts)
        return None if all(f is None for f in found) else found

    def _frozen(self, frozen: Sequence[Any] | None) -> Sequence[Any]:
        if frozen is None:
            return (None,) * len(self.parts)
        if len(frozen) != len(self.parts):
            raise ValueError(f"{NAME}: frozen has {len(frozen)} entries for {len(self.parts)} parts")
        return frozen

    def forward(self, images: Tensor, frozen: Sequence[Any] | None = None) -> Tensor:
        """``[B,3,H,W]`` float in [0, 1] -> float32 ``[B, embed_dim]``, unit L2 norm."""
        return self.fuse([p(images, f) for p, f in zip(self.parts, self._frozen(frozen))])

    def training_forward(self, images: Tensor, frozen: Sequence[Any] | None = None
                         ) -> tuple[Tensor, Tensor | None]:
        """Fused embeddings and the sum of the parts' auxiliary losses (None when no part has one)."""
        outs = [p.training_forward(images, f) for p, f in zip(self.parts, self._frozen(frozen))]
        aux = [a for _, a in outs if a is not None]
        return self.fuse([e for e, _ in outs]), (torch.stack([a.float() for a in aux]).sum() if aux else None)


@hookimpl
def register_encoders(register: Any) -> None:
    register(EncoderSpec(
        name=NAME,
        factory=Fused,
        summary="concatenation of two or more encoders' normalised embeddings (ALADIN's fusion), weighted",
        paper=PAPER,
        default_config=copy.deepcopy(DEFAULT_CONFIG),
    ))


__all__ = ["Fused", "DEFAULT_CONFIG", "register_encoders"]
