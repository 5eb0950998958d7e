"""Input sizing helpers: pad to a multiple, cap the working size of attention stylizers."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(x: Tensor, m: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``x`` ``[B,C,H,W]`` on the bottom and right so H and W are multiples of ``m``.

    Returns ``(padded, (H, W))``; crop the result back with ``y[..., :H, :W]``. Padding reflects the
    image (no hard edge for the network to stylise); a side shorter than its padding, where
    reflection is impossible, is replicated instead.
    """
    if m < 1:
        raise ValueError(f"pad_to_multiple: multiple must be >= 1, got {m}")
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % m, (-w) % m
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def attention_working_size(h: int, w: int, max_tokens: int, stride: int = 8) -> tuple[int, int]:
    """The largest size with the aspect of ``(h, w)`` whose attention has at most ``max_tokens`` positions.

    Attention stylizers attend over every position of a feature map at ``1/stride`` scale, so memory
    grows as ``(h*w/stride**2)**2``. Returns ``(h, w)`` unchanged when it fits; otherwise a smaller
    ``(h2, w2)`` (each >= ``stride``) at which to stylise before resizing the result back.
    """
    if max_tokens < 1:
        raise ValueError(f"attention_working_size: max_tokens must be >= 1, got {max_tokens}")
    tokens = math.ceil(h / stride) * math.ceil(w / stride)
    if tokens <= max_tokens:
        return h, w
    scale = math.sqrt(max_tokens / tokens)
    h2, w2 = max(stride, int(h * scale)), max(stride, int(w * scale))
    # Rounding can leave one row too many; shrink the longer side until the budget holds.
    while math.ceil(h2 / stride) * math.ceil(w2 / stride) > max_tokens and max(h2, w2) > stride:
        if h2 >= w2:
            h2 -= 1
        else:
            w2 -= 1
    return h2, w2


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (antialiased) resize of ``[B,C,H,W]`` to ``size``; a no-op when already that size.

    The other half of the attention memory policy: inputs go to :func:`attention_working_size`
    and the result comes back to the input size.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


__all__ = ["pad_to_multiple", "attention_working_size", "resize_to"]
