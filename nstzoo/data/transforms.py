"""Resizing and cropping for float image tensors.

All functions take ``[3,H,W]`` or ``[B,3,H,W]`` float tensors with values in ``[0, 1]`` and
return the same rank. Resizing is bilinear with antialiasing: its weights are non-negative,
so results stay in ``[0, 1]`` without clamping (bicubic would overshoot at edges).
A batch is cropped at one offset for all its images, so it stays one tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError

__all__ = ["resize_shorter", "center_crop", "random_crop", "resize_crop", "ResizeCrop"]


def _check(img: Tensor, size: int) -> None:
    if not isinstance(img, Tensor) or img.ndim not in (3, 4) or not img.is_floating_point():
        what = f"{tuple(img.shape)} {img.dtype}" if isinstance(img, Tensor) else type(img).__name__
        raise DataError(f"expected a float image tensor [3,H,W] or [B,3,H,W], got {what}")
    if int(size) != size or size < 1:
        raise DataError(f"image size must be a positive integer, got {size!r}")


def resize_shorter(img: Tensor, size: int) -> Tensor:
    """Resize so that the shorter side is ``size`` pixels, keeping the aspect ratio.

    Args:
        img: ``[3,H,W]`` or ``[B,3,H,W]`` float in ``[0,1]``.
        size: target length of the shorter side.

    Returns:
        The same rank, shorter side ``size``, longer side rounded to the nearest pixel.
    """
    _check(img, size)
    h, w = img.shape[-2:]
    if min(h, w) == size:
        return img
    scale = size / min(h, w)
    new_hw = (size, max(size, round(w * scale))) if h <= w else (max(size, round(h * scale)), size)
    batch = img if img.ndim == 4 else img.unsqueeze(0)
    out = F.interpolate(batch, size=new_hw, mode="bilinear", align_corners=False, antialias=True)
    return out if img.ndim == 4 else out.squeeze(0)


def _upscale_to_fit(img: Tensor, size: int) -> Tensor:
    # A crop larger than the image would need padding, which shows as borders in a stylized
    # image; upscaling the shorter side to the crop size is the lesser evil.
    return resize_shorter(img, size) if min(img.shape[-2:]) < size else img


def center_crop(img: Tensor, size: int) -> Tensor:
    """The central ``size x size`` window (images smaller than ``size`` are upscaled first).

    Returns:
        ``[3,size,size]`` or ``[B,3,size,size]``.
    """
    _check(img, size)
    img = _upscale_to_fit(img, size)
    h, w = img.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top : top + size, left : left + size]


def random_crop(img: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly placed ``size x size`` window (images smaller are upscaled first).

    Args:
        img: ``[3,H,W]`` or ``[B,3,H,W]`` float; a batch shares one offset.
        size: crop side.
        generator: CPU generator for the offset; ``None`` uses torch's global RNG.

    Returns:
        ``[3,size,size]`` or ``[B,3,size,size]``.
    """
    _check(img, size)
    img = _upscale_to_fit(img, size)
    h, w = img.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return img[..., top : top + size, left : left + size]


def resize_crop(
    img: Tensor, size: int, *, random: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Resize the shorter side to ``size``, then crop ``size x size`` (centre or random).

    Random crops then move only along the longer side, keeping the whole shorter side: style
    statistics of the full image are kept, and content is not zoomed in on.

    Returns:
        ``[3,size,size]`` or ``[B,3,size,size]``.
    """
    img = resize_shorter(img, size)
    return random_crop(img, size, generator) if random else center_crop(img, size)


class ResizeCrop:
    """Picklable transform: :func:`resize_crop` with fixed settings, for :class:`ImageFolder`.

    Args:
        size: output side.
        random: random instead of centre crops.
        seed: seed for random crops. In DataLoader workers each worker derives its own stream
            from ``seed`` and its worker id, so workers do not repeat each other's offsets.
            ``None`` uses torch's global RNG (which DataLoader seeds per worker).
    """

    def __init__(self, size: int, random: bool = False, seed: int | None = None):
        if int(size) != size or size < 1:
            raise DataError(f"ResizeCrop size must be a positive integer, got {size!r}")
        self.size = int(size)
        self.random = bool(random)
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._worker: int | None = None

    def _gen(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else -1
        # Made lazily in each process: a generator created before forking would be copied
        # into every worker, and they would all draw the same offsets.
        if self._generator is None or self._worker != worker:
            self._generator = torch.Generator().manual_seed(self.seed * 1_000_003 + worker + 1)
            self._worker = worker
        return self._generator

    def __call__(self, img: Tensor) -> Tensor:
        return resize_crop(img, self.size, random=self.random, generator=self._gen() if self.random else None)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_generator"], state["_worker"] = None, None  # generators are per-process
        return state

    def __repr__(self) -> str:
        return f"ResizeCrop({self.size}, random={self.random}, seed={self.seed})"
