"""Any resolution within a memory budget: overlapped tiles, blended with linear (feathered) ramps.

A stylizer's activation memory grows with the content's pixels (VGG's first layers hold 64
channels at full resolution), so a 4096x4096 image cannot go through in one piece on a small
machine. Here the content is cut into equal ``tile x tile`` windows that overlap by ``overlap``
pixels, every window is stylized *at full resolution* (a batch of windows per call; the style is
encoded once per call and broadcast), and the windows are blended back with weights that ramp
linearly from 0 to 1 across each overlap, so there is no hard seam. Windows keep the image's own
pixels at the borders (the last window in a row is shifted to end at the border rather than
padded), and every interior window edge lies inside an overlap where its weight goes to zero,
which hides the padding artefacts of the network at that edge.

Image-global quantities (style statistics, a style vector) are the same for every window, because
the style is whole in every call; stylizers that also need the *content's* global statistics
(Ghiasi's and Dumoulin's ``alpha``, Reinhard) get a downsampled view of the whole content as
``whole``. What differs between windows is the content normalisation inside AdaIN-family methods
(each window's own feature moments); :func:`seam_ratio` measures how much of that shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["tile_starts", "feather", "stylize_tiled", "seam_ratio", "tile_side_for_budget", "WHOLE_SIDE"]

#: The longer side of the downsampled ``whole`` view handed to stylizers for image-global statistics.
WHOLE_SIDE = 512


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``tile`` covering ``[0, length)`` with at least ``overlap`` shared pixels.

    The last window ends exactly at ``length`` (it may overlap its neighbour by more); a length
    that fits in one window gives ``[0]``.
    """
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    step = tile - overlap
    count = math.ceil((length - tile) / step) + 1
    starts = [min(i * step, length - tile) for i in range(count)]
    return sorted(set(starts))


def feather(start: int, tile: int, overlap: int, total: int, device: torch.device) -> Tensor:
    """1-D blending weights ``[tile]`` of one window: linear ramps over the overlap at interior edges.

    The ramp runs over ``overlap`` pixels from ``1/(overlap+1)`` to 1, so weights never reach 0 and
    every pixel keeps a positive total weight; an edge on the image border gets no ramp.
    """
    weight = torch.ones(tile, device=device)
    if overlap == 0:
        return weight
    ramp = torch.arange(1, overlap + 1, device=device, dtype=torch.float32) / (overlap + 1)
    if start > 0:
        weight[:overlap] = torch.minimum(weight[:overlap], ramp)
    if start + tile < total:
        weight[-overlap:] = torch.minimum(weight[-overlap:], ramp.flip(0))
    return weight


def stylize_tiled(run: Callable[[Tensor, Tensor], Tensor], content: Tensor, tile: int, overlap: int,
                  batch: int = 1, progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Stylize ``content`` ``[1,3,H,W]`` window by window and blend the windows.

    Args:
        run: ``run(windows [n,3,th,tw], whole [1,3,h,w]) -> [n,3,th,tw]`` in [0, 1]; ``whole`` is the
            content downsampled to :data:`WHOLE_SIDE` on its longer side.
        tile: window side (windows are ``min(tile, H) x min(tile, W)``).
        overlap: pixels shared by neighbouring windows (the blending ramp's length).
        batch: windows per ``run`` call.
        progress: called as ``progress(done, total)`` after each call.

    Returns:
        ``[1,3,H,W]`` in [0, 1]: the weighted mean of the windows covering each pixel.
    """
    if content.dim() != 4 or content.shape[0] != 1:
        raise ValueError(f"stylize_tiled takes one image [1,3,H,W], got {tuple(content.shape)}")
    _, _, h, w = content.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, min(overlap, th - 1)), tile_starts(w, tw, min(overlap, tw - 1))
    scale = WHOLE_SIDE / max(h, w)
    whole = content if scale >= 1 else F.interpolate(
        content, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
        align_corners=False, antialias=True)
    out = torch.zeros(1, 3, h, w, device=content.device, dtype=torch.float32)
    total = torch.zeros(1, 1, h, w, device=content.device, dtype=torch.float32)
    windows = [(y, x) for y in ys for x in xs]
    for first in range(0, len(windows), batch):
        group = windows[first:first + batch]
        crops = torch.cat([content[..., y:y + th, x:x + tw] for y, x in group])
        results = run(crops, whole).float()
        for (y, x), result in zip(group, results):
            wy = feather(y, th, min(overlap, th - 1), h, content.device)
            wx = feather(x, tw, min(overlap, tw - 1), w, content.device)
            weight = wy[:, None] * wx[None, :]
            out[..., y:y + th, x:x + tw] += result * weight
            total[..., y:y + th, x:x + tw] += weight
        if progress is not None:
            progress(min(first + batch, len(windows)), len(windows))
    return (out / total).clamp(0.0, 1.0).to(content.dtype)


def seam_ratio(image: Tensor, tile: int, overlap: int) -> float:
    """How visible tile seams are: gradient energy on the window edges relative to everywhere else.

    For the windows :func:`stylize_tiled` would use on ``image`` ``[B,3,H,W]``, takes the mean
    absolute difference between neighbouring pixels *across* every interior window edge (both edges
    of each overlap, where one window's weight starts ramping) and divides it by the same mean over
    all other columns and rows. About 1 means no seam; a hard seam (a step between windows) gives
    much more. Images without interior edges return 1.
    """
    _, _, h, w = image.shape
    th, tw = min(tile, h), min(tile, w)
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # [W-1], across column c|c+1
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=(0, 1, 3))  # [H-1]
    edges_x = _edges(w, tw, min(overlap, tw - 1))
    edges_y = _edges(h, th, min(overlap, th - 1))
    if not edges_x and not edges_y:
        return 1.0
    on = torch.cat([dx[edges_x], dy[edges_y]])
    mask_x = torch.ones_like(dx, dtype=torch.bool)
    mask_x[edges_x] = False
    mask_y = torch.ones_like(dy, dtype=torch.bool)
    mask_y[edges_y] = False
    off = torch.cat([dx[mask_x], dy[mask_y]])
    return float(on.mean() / off.mean().clamp_min(1e-12))


def _edges(length: int, tile: int, overlap: int) -> list[int]:
    """Difference indices (between pixel i and i+1) at the interior edges of the windows."""
    starts = tile_starts(length, tile, overlap)
    edges = set()
    for start in starts[1:]:
        edges.add(start - 1)  # where the next window begins
    for start in starts[:-1]:
        edges.add(start + tile - 1)  # where this window ends
    return sorted(e for e in edges if 0 <= e < length - 1)


def tile_side_for_budget(bytes_per_pixel: float, budget_bytes: float, fixed_bytes: float,
                         multiple: int = 64, largest: int = 2048, smallest: int = 128) -> int:
    """The largest window side (a multiple of ``multiple``) whose activations fit the budget.

    ``fixed_bytes`` is what the run holds anyway (weights, the full-resolution content, output and
    blending buffers); each window then costs about ``bytes_per_pixel * side**2``.
    """
    room = max(budget_bytes - fixed_bytes, 0.0)
    side = int(math.sqrt(room / max(bytes_per_pixel, 1.0)))
    side = (side // multiple) * multiple
    return max(smallest, min(largest, side))
