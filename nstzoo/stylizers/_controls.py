"""Small helpers the built-in stylizers share to honour ``alpha`` and ``style_mix`` (see
:attr:`nstzoo.specs.StylizerSpec.controls`): weight checking, weighted sums, batch broadcasting.

A stylizer mixes where its method defines the style: AdaIN/EFDM/CAST mix target statistics,
SANet/PAMA/AdaAttN mix transformed features, Ghiasi mixes style vectors, Dumoulin mixes its 26
style weights. ``alpha`` blends the same quantity with the content's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def style_weights_for(styles: Sequence[Tensor], style_weights: Sequence[float] | None) -> list[float]:
    """The K mixing weights for K styles: ``[1.0]`` for one style without weights, else the given ones.

    Raises:
        ValueError: a count mismatch, a negative or non-finite weight, or weights not summing to 1
            (the engine normalises user input before it gets here, so this is a caller bug).
    """
    if not styles:
        raise ValueError("stylize_controlled needs at least one style")
    if style_weights is None:
        if len(styles) != 1:
            raise ValueError(f"{len(styles)} styles need style_weights")
        return [1.0]
    weights = [float(w) for w in style_weights]
    if len(weights) != len(styles):
        raise ValueError(f"{len(styles)} styles but {len(weights)} style weights")
    if any(not math.isfinite(w) or w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-4:
        raise ValueError(f"style weights must be non-negative and sum to 1, got {weights}")
    return weights


def weighted_sum(tensors: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``sum_k weights[k] * tensors[k]``; a single weight 1 returns the tensor itself (bit-exact)."""
    if len(tensors) == 1 and weights[0] == 1.0:
        return tensors[0]
    total = tensors[0] * weights[0]
    for tensor, weight in zip(tensors[1:], weights[1:]):
        total = total + tensor * weight
    return total


def blend(alpha: float, stylized: Tensor, content: Tensor) -> Tensor:
    """``alpha * stylized + (1 - alpha) * content``; ``alpha == 1`` returns ``stylized`` unchanged (bit-exact)."""
    if alpha == 1.0:
        return stylized
    return torch.lerp(content, stylized, float(alpha))


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha


def mix_style_codes(code: Callable[[Tensor], Tensor], content: Tensor, styles: Sequence[Tensor],
                    weights: Sequence[float], alpha: float, whole: Tensor | None) -> Tensor:
    """For methods that condition on one code per image (Ghiasi's style vector, Dumoulin's 26 style
    weights): ``sum_k w_k code(style_k)``, blended by ``alpha`` with the content's own code, taken from
    ``whole`` when ``content`` is a tile so that every tile gets the same one. ``[B,...]`` codes."""
    batch = content.shape[0]
    mixed = weighted_sum([to_batch(code(style), batch) for style in styles], weights)
    if alpha < 1.0:
        own = to_batch(code(whole if whole is not None else content), batch)
        mixed = blend(alpha, mixed, own)
    return mixed


def to_batch(x: Tensor, batch: int) -> Tensor:
    """A ``[1,...]`` tensor broadcast (a view, no copy) to ``[batch,...]``; a ``[batch,...]`` one unchanged.

    Styles may come once for a whole batch of content tiles or video frames, so the style is
    encoded once per call and only its features are broadcast.
    """
    if x.shape[0] == batch:
        return x
    if x.shape[0] != 1:
        raise ValueError(f"style batch {x.shape[0]} does not match content batch {batch}")
    return x.expand(batch, *x.shape[1:])


__all__ = ["style_weights_for", "weighted_sum", "blend", "check_alpha", "mix_style_codes", "to_batch"]
