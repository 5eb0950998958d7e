"""Image decoding throughput: nstzoo's safe loader against the raw decoders it could use.

Makes N real-ish 512-pixel images (random crops of the photos installed with scikit-image and
scikit-learn, half JPEG quality 90, half PNG) in a temporary folder, then times, from the page
cache, in one thread:

* ``nstzoo``: :func:`nstzoo.data.load_image` (header check, pixel limit, decode, float [0,1]);
* ``torchvision``: ``torchvision.io.decode_image`` + float conversion, the decoder nstzoo used
  before (its libpng build aborts the process on a corrupt PNG);
* ``pillow``: ``Image.open().convert("RGB")`` + float conversion.

Prints images per CPU-second per decoder and format (best of ``--repeat`` passes), and JSON with ``--json``.
``--baseline FILE`` adds an earlier ``nstzoo/data/folder.py`` as ``baseline``, for before/after figures
measured in the same run::

    python bench/decode.py --count 200 --repeat 5
    git show 1622d94:nstzoo/data/folder.py > /tmp/folder_before.py   # torchvision decoding
    python bench/decode.py --baseline /tmp/folder_before.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_images(folder: Path, count: int, size: int = 512, seed: int = 0) -> list[Path]:
    """``count`` images of ``size`` x ``size`` cut from the installed photos, JPEG and PNG alternating."""
    from nstzoo.data.assets import real_photo_paths

    photos = [np.asarray(Image.open(p).convert("RGB")) for p in real_photo_paths(color_only=True)]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = max(size / photo.shape[0], size / photo.shape[1]) * rng.uniform(1.0, 1.5)
        im = Image.fromarray(photo).resize((int(photo.shape[1] * scale) + 1, int(photo.shape[0] * scale) + 1))
        x, y = rng.integers(0, im.width - size + 1), rng.integers(0, im.height - size + 1)
        im = im.crop((x, y, x + size, y + size))
        path = folder / (f"{i:04d}.jpg" if i % 2 == 0 else f"{i:04d}.png")
        im.save(path, quality=90) if path.suffix == ".jpg" else im.save(path)
        paths.append(path)
    return paths


def torchvision_decode(path: Path) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    return decode_image(data, mode=ImageReadMode.RGB).float().div_(255)


def pillow_decode(path: Path) -> torch.Tensor:
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        arr = np.array(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255)


def nstzoo_decode(path: Path) -> torch.Tensor:
    from nstzoo.data import load_image

    return load_image(path)


def load_baseline(path: str) -> Callable[[Path], torch.Tensor]:
    """``load_image`` of an earlier folder.py, its package-relative imports pointed at nstzoo."""
    import types

    source = Path(path).read_text().replace("from ..", "from nstzoo.").replace("from .", "from nstzoo.data.")
    module = types.ModuleType("nstzoo_baseline_folder")
    exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - a file the user points at, like any script
    return module.load_image


def seconds(decode: Callable[[Path], torch.Tensor], paths: list[Path]) -> float:
    # CPU time of this process, not wall time: the benchmark machines are shared, and another
    # process's load would otherwise show up as a slower decoder.
    start = time.process_time()
    for p in paths:
        decode(p)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--baseline", help="an earlier nstzoo/data/folder.py to time as 'baseline'")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.count)
        for p in paths:  # warm the page cache and the decoders' lazy imports
            nstzoo_decode(p), torchvision_decode(p), pillow_decode(p)
        groups = {"all": paths, "jpeg": [p for p in paths if p.suffix == ".jpg"],
                  "png": [p for p in paths if p.suffix == ".png"]}
        decoders = {"nstzoo": nstzoo_decode, "torchvision": torchvision_decode, "pillow": pillow_decode}
        if args.baseline:
            decoders["baseline"] = load_baseline(args.baseline)
        best = {(name, group): float("inf") for name in decoders for group in groups}
        for _ in range(args.repeat):  # round robin, best of --repeat: a burst of load hits all alike
            for name, fn in decoders.items():
                for group, ps in groups.items():
                    best[name, group] = min(best[name, group], seconds(fn, ps))
        result: dict[str, dict[str, float]] = {
            name: {group: round(len(ps) / best[name, group], 1) for group, ps in groups.items()} for name in decoders}
    result["setup"] = {"count": args.count, "size": 512, "threads": 1, "cpu_count": os.cpu_count(),  # type: ignore[dict-item]
                       "clock": "process CPU time"}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name in (n for n in ("baseline", "nstzoo", "torchvision", "pillow") if n in result):
            print(f"{name:12s} " + "  ".join(f"{g} {v:7.1f} img/s" for g, v in result[name].items()))


if __name__ == "__main__":
    main()
