"""Per-step training data: B content images and B/2 style images, decoded per sample in DataLoader workers.

Step ``t``'s images, their order and their crops depend only on ``(seed, t)``, so ``--resume``
continues with exactly the batches an uninterrupted run would have seen, whatever the number of
workers or processes. Unreadable files are skipped, replaced by another draw, and counted in the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
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
    source = _as_source(paths)
    for index in indices.tolist():
        image, index = _decode_with_retry(source, index, generator, skipped, warned)
        images.append(random_crop(resize_shorter(image, load_size or size), size, generator))
        kept.append(index)
    return torch.stack(images).clamp(0, 1), torch.tensor(kept, dtype=torch.int64)


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), so per-sample streams never collide in practice."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


CONTENT, STYLE = 0, 1


class StepBatches(Dataset):
    """The images of training step ``t``, planned globally and decoded per sample.

    Step ``t`` draws B contents (in pairs of two different images) and B/2 styles from a generator
    seeded by ``(seed, t)``: the *plan*, cheap, made wherever it is needed. Each sample is then
    decoded, resized and cropped on its own, with a generator seeded by ``(seed, t, role, slot)``,
    so samples can be spread over DataLoader workers and over ranks (rank ``r`` of ``W`` decodes
    contents ``[r*B/W, (r+1)*B/W)`` and the matching styles) and a step's batch is the same however it
    is split. Images travel as uint8 ``[3,S,S]`` until the device (a quarter of float32's bytes).

    Args:
        contents, styles: image sources (a list of paths, or any object with ``__len__``, ``read(i)``
            returning ``[3,H,W]`` float in [0,1], and ``name(i)``: :mod:`nstzoo.data.shards`).
        batch_size: B, the global number of contents (and stylized images) per step; B/2 styles.
        size: side of the square crops (the stylization size).
        seed: the run's seed.
        rank, world_size: this process's share of every step.
    """

    def __init__(self, contents: Any, styles: Any, batch_size: int, size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.contents, self.styles = _as_source(contents), _as_source(styles)
        if len(self.contents) < 2:
            raise DataError(f"need at least 2 content images (each style stylizes two different contents), "
                            f"got {len(self.contents)}")
        if len(self.styles) == 0:
            raise DataError("no style images")
        if batch_size % (2 * world_size):
            raise DataError(f"batch_size {batch_size} must be a multiple of 2 x {world_size} processes "
                            "(each process takes whole style pairs)")
        self.batch_size, self.size, self.seed = batch_size, size, seed
        self.rank, self.world_size = rank, world_size
        self.local = batch_size // world_size

    def __len__(self) -> int:  # steps are unbounded; the sampler decides which are read
        return 2**62

    def plan(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global ``(content indices [B], style indices [B/2])`` of step ``step``; contents 2j, 2j+1 differ."""
        generator = torch.Generator().manual_seed(self.seed * 2_654_435_761 % (2**63) + step)
        content_idx = distinct_draw(len(self.contents), self.batch_size, generator)
        pairs = content_idx.view(-1, 2)
        same = pairs[:, 0] == pairs[:, 1]
        pairs[same, 1] = (pairs[same, 1] + 1) % len(self.contents)
        style_idx = distinct_draw(len(self.styles), self.batch_size // 2, generator)
        return pairs.flatten(), style_idx

    def sample_keys(self, step: int) -> list[tuple[int, int, int, int]]:
        """``(step, role, slot, index)`` of every sample this rank decodes for ``step``, contents first."""
        content_idx, style_idx = self.plan(step)
        c0, s0 = self.rank * self.local, self.rank * self.local // 2
        return ([(step, CONTENT, slot, int(content_idx[slot])) for slot in range(c0, c0 + self.local)]
                + [(step, STYLE, slot, int(style_idx[slot])) for slot in range(s0, s0 + self.local // 2)])

    def load_sample(self, key: tuple[int, int, int, int]) -> dict[str, Any]:
        """Decode, resize and crop one sample: ``image`` uint8 ``[3,S,S]``, the ``index`` used, ``skipped`` files."""
        step, role, slot, index = key
        source = self.contents if role == CONTENT else self.styles
        generator = torch.Generator().manual_seed(_mix(self.seed, step, role, slot))
        skipped: list[str] = []
        image, used = _decode_with_retry(source, index, generator, skipped, None)
        crop = random_crop(resize_shorter(image, self.size), self.size, generator)
        return {"key": key, "image": crop.clamp(0, 1).mul(255).round().to(torch.uint8), "index": used,
                "skipped": skipped}

    def __getitem__(self, key: tuple[int, int, int, int]) -> dict[str, Any]:
        return self.load_sample(key)

    def assemble(self, step: int, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """This rank's batch of ``step`` from its samples (in :meth:`sample_keys` order)."""
        n = self.local
        images = torch.stack([s["image"] for s in samples])
        indices = torch.tensor([s["index"] for s in samples], dtype=torch.int64)
        return {"step": step, "contents": images[:n], "content_ids": indices[:n], "styles": images[n:],
                "style_ids": indices[n:], "skipped": [p for s in samples for p in s["skipped"]]}

    def batch(self, step: int) -> dict[str, Any]:
        """This rank's batch of ``step``, decoded in this process (what :func:`step_loader` yields)."""
        return self.assemble(step, [self.load_sample(key) for key in self.sample_keys(step)])


def _as_source(items: Any) -> Any:
    """A source as is; a list of image paths as a :class:`~nstzoo.data.shards.FolderSource`."""
    if hasattr(items, "read") and hasattr(items, "name"):
        return items
    from .shards import FolderSource

    return FolderSource(items) if len(items) else []


def _decode_with_retry(source: Any, index: int, generator: torch.Generator, skipped: list[str],
                       warned: set[str] | None) -> tuple[torch.Tensor, int]:
    """``source.read(index)``; an unreadable item is recorded, warned about and replaced by another draw."""
    while True:
        try:
            return source.read(index), index
        except DataError as err:
            name = source.name(index)
            skipped.append(name)
            if warned is None or name not in warned:
                if warned is not None:
                    warned.add(name)
                warnings.warn(f"skipping unreadable image: {err.message}", RuntimeWarning, stacklevel=3)
            if len(skipped) > MAX_SKIPS_PER_STEP:
                raise DataError(f"more than {MAX_SKIPS_PER_STEP} unreadable images in a row (last: {name}); "
                                "check the image folders") from None
            index = int(torch.randint(len(source), (1,), generator=generator))


class _StepSampler(torch.utils.data.Sampler):
    """Every sample key of steps ``start..stop-1`` in order (the plans are made here, in the main process)."""

    def __init__(self, batches: StepBatches, start: int, stop: int):
        self.batches, self.start, self.stop = batches, start, stop

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        for step in range(self.start, self.stop):
            yield from self.batches.sample_keys(step)

    def __len__(self) -> int:
        return (self.stop - self.start) * (self.batches.local + self.batches.local // 2)


def step_loader(dataset: StepBatches, start: int, stop: int, workers: int, *, pin_memory: bool = False,
                prefetch_factor: int = 4) -> Iterator[dict[str, Any]]:
    """This rank's batches of steps ``start..stop-1``, in order.

    With ``workers > 0`` the *samples* of a step are spread over the workers (not one whole step per
    worker), so a step is decoded ``workers`` times faster. Host memory in flight is bounded by
    ``workers * prefetch_factor`` samples plus the step being assembled and the one being trained:
    ``(workers * prefetch_factor + 2 * (B + B/2) / W) * 3 * S * S`` bytes of uint8 (at the paper's
    B=1024, S=512, W=1, 8 workers: about 2.4 GB, against 4.8 GB of float32 per step before).
    """
    per_step = dataset.local + dataset.local // 2
    if workers == 0:
        for step in range(start, stop):
            yield dataset.batch(step)
        return
    # A private generator: creating the iterator would otherwise draw from the global RNG, and a
    # resumed run (restored RNG, then a new iterator) would see a shifted dropout stream.
    loader = DataLoader(dataset, batch_size=None, sampler=_StepSampler(dataset, start, stop), num_workers=workers,
                        generator=torch.Generator().manual_seed(dataset.seed), pin_memory=pin_memory,
                        prefetch_factor=prefetch_factor, persistent_workers=False, multiprocessing_context="fork")
    pending: list[dict[str, Any]] = []
    for sample in loader:
        pending.append(sample)
        if len(pending) == per_step:
            batch = dataset.assemble(pending[0]["key"][0], pending)
            if pin_memory:
                batch["contents"], batch["styles"] = batch["contents"].pin_memory(), batch["styles"].pin_memory()
            yield batch
            pending = []
