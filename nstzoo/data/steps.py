"""Per-step training data: B content images and B/2 style images, decoded in DataLoader workers.

Step ``t``'s images, their order and their crops depend only on ``(seed, t)``, so ``--resume``
continues with exactly the batches an uninterrupted run would have seen, whatever the number of
workers. Unreadable files are skipped, replaced by another draw, and counted in the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .folder import load_image
from .transforms import random_crop, resize_shorter

# Give up on a step after this many unreadable files: the folder is mostly broken.
MAX_SKIPS_PER_STEP = 64


def distinct_draw(n_items: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` indices into ``n_items``, without repeats while possible (concatenated permutations)."""
    chunks, have = [], 0
    while have < count:
        chunks.append(torch.randperm(n_items, generator=generator))
        have += n_items
    return torch.cat(chunks)[:count]


def load_random_crops(paths: Sequence[str | Path], indices: torch.Tensor, size: int, generator: torch.Generator,
                      skipped: list[str], *, load_size: int | None = None,
                      warned: set[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``paths[indices]`` and take a random ``size x size`` crop of each.

    The shorter side is first resized to ``load_size`` (default ``size``: the crop then keeps the
    whole shorter side). An unreadable file is appended to ``skipped``, warned about (once per file
    when a ``warned`` set is given), and replaced by another draw from ``generator``, so the result
    still has ``len(indices)`` images and depends only on the generator's seed.

    Returns:
        ``images [N,3,size,size]`` in [0, 1] and the indices actually used ``[N]`` (int64).
    """
    images, kept = [], []
    for index in indices.tolist():
        while True:
            path = str(paths[index])
            try:
                image = load_image(path)
                break
            except DataError as err:
                skipped.append(path)
                if warned is None or path not in warned:
                    if warned is not None:
                        warned.add(path)
                    warnings.warn(f"skipping unreadable image: {err.message}", RuntimeWarning, stacklevel=2)
                if len(skipped) > MAX_SKIPS_PER_STEP:
                    raise DataError(f"more than {MAX_SKIPS_PER_STEP} unreadable images in one step (last: {path}); "
                                    "check the image folders") from None
                index = int(torch.randint(len(paths), (1,), generator=generator))
        images.append(random_crop(resize_shorter(image, load_size or size), size, generator))
        kept.append(index)
    return torch.stack(images).clamp(0, 1), torch.tensor(kept, dtype=torch.int64)


class StepBatches(Dataset):
    """``dataset[t]`` -> the decoded images of training step ``t``.

    Args:
        contents, styles: image paths.
        batch_size: B, the number of contents (and stylized images) per step; B/2 styles are drawn.
        size: side of the square crops (the stylization size).
        seed: the run's seed.
    """

    def __init__(self, contents: Sequence[Path], styles: Sequence[Path], batch_size: int, size: int, seed: int):
        if len(contents) < 2:
            raise DataError(f"need at least 2 content images (each style stylizes two different contents), got {len(contents)}")
        if not styles:
            raise DataError("no style images")
        self.contents, self.styles = [str(p) for p in contents], [str(p) for p in styles]
        self.batch_size, self.size, self.seed = batch_size, size, seed

    def __len__(self) -> int:  # steps are unbounded; the sampler decides which are read
        return 2**62

    def __getitem__(self, step: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(self.seed * 2_654_435_761 % (2**63) + step)
        b = self.batch_size
        content_idx = distinct_draw(len(self.contents), b, generator)
        # The two contents of one style must differ, or the positive pair would share content too.
        pairs = content_idx.view(-1, 2)
        same = pairs[:, 0] == pairs[:, 1]
        pairs[same, 1] = (pairs[same, 1] + 1) % len(self.contents)
        style_idx = distinct_draw(len(self.styles), b // 2, generator)
        skipped: list[str] = []
        contents, content_ids = load_random_crops(self.contents, pairs.flatten(), self.size, generator, skipped)
        styles, style_ids = load_random_crops(self.styles, style_idx, self.size, generator, skipped)
        return {"step": step, "contents": contents, "content_ids": content_ids, "styles": styles,
                "style_ids": style_ids, "skipped": skipped}


def step_loader(dataset: StepBatches, start: int, stop: int, workers: int) -> Iterator[dict[str, Any]]:
    """Iterate steps ``start..stop-1`` in order; workers decode ahead."""
    # A private generator: creating the iterator would otherwise draw from the global RNG, and a
    # resumed run (restored RNG, then a new iterator) would see a shifted dropout stream.
    generator = torch.Generator().manual_seed(dataset.seed)
    loader = DataLoader(dataset, batch_size=None, sampler=range(start, stop), num_workers=workers, generator=generator,
                        persistent_workers=False, prefetch_factor=2 if workers else None,
                        multiprocessing_context="fork" if workers else None)
    return iter(loader)
