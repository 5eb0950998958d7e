"""Decode throughput from an image folder against the same images in tar shards.

Makes N images of 256 to 512 pixels a side (crops of the photos installed with scikit-image and
scikit-learn, else procedural images; JPEG quality 90 and PNG alternating) in a temporary folder,
shards them with :func:`nstzoo.data.shards.write_shards`, then reads all of them in a random order
(as training draws them), from the page cache, and prints images per second for:

* ``folder``: :meth:`FolderSource.read` (open + read + decode one file per image);
* ``shards``: :meth:`ShardSource.read` with every shard kept open (the first read of each shard
  indexes it, counted in the pass);
* ``shards-cold``: :meth:`ShardSource.read` with ``max_open_shards=1``, so nearly every read
  re-opens and re-indexes its shard: the cost of uniform random reads over more shards than stay open;

each in the main process and through a DataLoader with 1 and 2 forked workers (each worker
returns a uint8 256x256 crop, as the training loader does). Best of ``--repeat`` passes.

    python bench/data.py --count 500 --shard-size 100 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nstzoo.data.shards import FolderSource, ShardSource, write_shards


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` images with sides in [256, 512], JPEG and PNG alternating."""
    from nstzoo.data.assets import real_photo_paths

    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in real_photo_paths(color_only=True)]
    for i in range(count):
        h, w = (int(v) for v in rng.integers(256, 513, 2))
        if photos:
            photo = Image.fromarray(photos[i % len(photos)])
            scale = max(h / photo.height, w / photo.width) * rng.uniform(1.0, 1.5)
            photo = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1))
            x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
            im = photo.crop((x, y, x + w, y + h))
        else:
            from nstzoo.data.generate import generate_image

            pixels = generate_image("content", i, max(h, w), seed)[:, :h, :w]
            im = Image.fromarray((pixels.permute(1, 2, 0) * 255).round().byte().numpy())
        if i % 2 == 0:
            im.save(folder / f"{i:05d}.jpg", quality=90)
        else:
            im.save(folder / f"{i:05d}.png")


class Crops(torch.utils.data.Dataset):
    """Item ``i``: the source's image ``i``, top-left 256x256 crop as uint8 ``[3,256,256]``."""

    def __init__(self, source: Any):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.source.read(index)[:, :256, :256].mul(255).round().to(torch.uint8)


def images_per_second(source: Any, order: list[int], workers: int) -> float:
    start = time.perf_counter()
    if workers == 0:
        for index in order:
            source.read(index)
    else:
        loader = torch.utils.data.DataLoader(Crops(source), batch_size=None, sampler=order, num_workers=workers,
                                             multiprocessing_context="fork", prefetch_factor=4)
        for _ in loader:
            pass
    return len(order) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "images", Path(tmp) / "shards"
        folder.mkdir()
        make_images(folder, args.count)
        write_shards([folder], out, args.shard_size)
        order = list(range(args.count))
        random.Random(0).shuffle(order)
        sources = {"folder": lambda: FolderSource.from_folder(folder),
                   "shards": lambda: ShardSource(out),
                   "shards-cold": lambda: ShardSource(out, max_open_shards=1)}
        FolderSource.from_folder(folder).read_bytes(0)
        for path in list(folder.iterdir()) + list(out.iterdir()):  # into the page cache
            path.read_bytes()
        results: dict[str, dict[int, float]] = {}
        for name, make in sources.items():
            for workers in args.workers:
                # A fresh source per pass: each pass pays for opening its shards, as a new run does.
                best = max(images_per_second(make(), order, workers) for _ in range(args.repeat))
                results.setdefault(name, {})[workers] = best
    if args.json:
        print(json.dumps({"count": args.count, "shard_size": args.shard_size, "images_per_s": results}, indent=2))
        return
    print(f"{args.count} images, 256-512 px, JPEG q90 / PNG alternating, {args.shard_size} per shard, random order")
    print(f"{'source':<12}" + "".join(f"{f'{w} workers' if w else 'in process':>14}" for w in args.workers))
    for name, row in results.items():
        print(f"{name:<12}" + "".join(f"{row[w]:>14.1f}" for w in args.workers))


if __name__ == "__main__":
    main()
