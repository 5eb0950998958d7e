"""Image folders: list, decode and serve images as float tensors.

Every image leaves this module as a float32 tensor ``[3, H, W]`` with values in ``[0, 1]``,
whatever it was on disk (grayscale, palette, RGBA, 16-bit PNG, CMYK JPEG, WebP, BMP).

Decoding uses ``torchvision.io.decode_image`` (libjpeg-turbo, libpng, libwebp); torchvision
0.29 has no BMP decoder, so BMP and any other format it does not recognise fall back to Pillow
(a torchvision dependency, imported only when needed).

A folder scraped from the web always holds a few broken files. :class:`ImageFolder` therefore
never lets one kill a training run: ``__getitem__`` returns ``None`` for a file that cannot be
decoded (and warns once with its path), and :func:`collate_skip` drops those items and counts
them, so the consumer can report how many were skipped.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from ..errors import DataError
from ..files import atomic_write

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_images",
    "load_image",
    "decode_bytes",
    "ImageFolder",
    "collate_skip",
    "scan",
    "save_image",
]

#: File suffixes treated as images (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# Leading bytes of the formats torchvision decodes natively. Anything else goes to Pillow.
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = (b"GIF87a", b"GIF89a")


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(root: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """All image files under ``root`` (by suffix, see :data:`IMAGE_EXTENSIONS`), sorted.

    Hidden files and folders (names starting with ``.``) are skipped. The order is the sorted
    POSIX form of each path relative to ``root``, so it does not depend on the file system.

    Args:
        root: a folder.
        recursive: also look in sub-folders.

    Raises:
        DataError: ``root`` does not exist, is not a folder, or holds no image files.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is not a folder")
    found: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            # Prune hidden folders (.git, .ipynb_checkpoints, ...) in place so walk skips them.
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    else:
        found = [p for p in root.iterdir() if not p.name.startswith(".")]
    images = [p for p in found if _is_image_name(p) and p.is_file()]
    if not images:
        raise DataError(
            f"no images in {str(root)!r} (looked for {', '.join(IMAGE_EXTENSIONS)}"
            f"{'' if recursive else ', not in sub-folders'})"
        )
    images.sort(key=lambda p: p.relative_to(root).as_posix())
    return images


def _to_float_rgb(img: Tensor) -> Tensor:
    """``[C,H,W]`` uint8/uint16 with C in {1,2,3,4} -> ``[3,H,W]`` float32 in [0,1].

    Alpha is composited over white: a transparent logo or cut-out then looks as it does in a
    browser or image viewer, instead of showing whatever colour hides under alpha = 0
    (often black, sometimes garbage).
    """
    if img.dtype == torch.uint8:
        x = img.to(torch.float32).div_(255.0)
    elif img.dtype == torch.uint16:
        x = img.to(torch.float32).div_(65535.0)
    else:  # pragma: no cover - decoders only return these two
        raise TypeError(f"unexpected decoded dtype {img.dtype}")
    c = x.shape[0]
    if c in (2, 4):
        color, alpha = x[:-1], x[-1:]
        x = color * alpha + (1.0 - alpha)
        c -= 1
    if c == 1:
        x = x.expand(3, -1, -1)
    return x.contiguous()


def _png_has_alpha(data: bytes) -> bool:
    """True for RGBA / gray+alpha PNGs and palette PNGs with a tRNS chunk.

    Colour-key transparency (tRNS) in gray or truecolour PNGs is ignored: it is rare in
    photos and art, and libpng's expansion of it is not reliable through torchvision.
    """
    if len(data) < 33:
        return False  # too short to hold IHDR; the decoder will report the damage
    color_type = data[25]
    if color_type in (4, 6):
        return True
    if color_type != 3:
        return False
    pos = 8
    while pos + 8 <= len(data):  # walk the chunks that precede the image data
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"tRNS":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        pos += 12 + length
    return False


def _decode_pil(data: bytes) -> Tensor:
    """Pillow fallback for formats torchvision cannot decode (BMP, TIFF, ...)."""
    from PIL import Image, ImageOps  # lazy: only a few files ever need it

    with Image.open(io.BytesIO(data)) as im:
        im.load()  # Pillow decodes lazily; force it so truncation raises here
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16/32-bit grayscale: keep precision, scale like a 16-bit PNG.
            arr = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())
            return (arr / 65535.0).clamp_(0, 1).expand(3, -1, -1).contiguous()
        im = im.convert("RGBA")
        raw = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        return _to_float_rgb(raw.view(im.height, im.width, 4).permute(2, 0, 1))


def decode_bytes(data: bytes, name: str = "<bytes>") -> Tensor:
    """Decode an encoded image held in memory; see :func:`load_image`.

    Args:
        data: the file's bytes.
        name: how to call the image in an error message.

    Returns:
        ``[3, H, W]`` float32 in ``[0, 1]``.

    Raises:
        DataError: naming ``name``, when the bytes are empty or cannot be decoded.
    """
    if len(data) == 0:
        raise DataError(f"cannot read image {name}: the file is empty")
    try:
        if data.startswith(_JPEG_MAGIC):
            # JPEGs have no alpha; mode RGB also converts CMYK/YCCK and grayscale JPEGs.
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            img = decode_image(buf, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        elif data.startswith(_PNG_MAGIC):
            # Only ask libpng for alpha when the file has some: torchvision 0.29 returns
            # garbage for RGB_ALPHA on palette PNGs without transparency and on 1-bit gray.
            mode = ImageReadMode.RGB_ALPHA if _png_has_alpha(data) else ImageReadMode.RGB
            img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
        elif data.startswith(_GIF_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            # WebP comes back as 3 or 4 channels depending on alpha; GIFs as RGB.
            img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
            if img.ndim == 4:  # animated: keep the first frame
                img = img[0]
        else:
            return _decode_pil(data)
        return _to_float_rgb(img)
    except DataError:
        raise
    except Exception as err:  # decoders raise RuntimeError, OSError, ValueError, ...
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        # torchvision prefixes messages with a C++ source location; keep only the sentence.
        reason = reason.rsplit(", ", 1)[-1] if ".cpp:" in reason else reason
        raise DataError(f"cannot decode image {name}: {reason}") from err


def load_image(path: str | os.PathLike[str]) -> Tensor:
    """Read and decode one image file.

    Grayscale images are repeated to three channels; RGBA, LA and palette images with
    transparency are composited over white; 16-bit PNGs are scaled by 1/65535; JPEG EXIF
    orientation is applied; animated GIF/WebP give their first frame.

    Args:
        path: an image file (JPEG, PNG, WebP, BMP, or anything Pillow reads).

    Returns:
        ``[3, H, W]`` float32 with values in ``[0, 1]``.

    Raises:
        DataError: naming the file, when it is missing, empty, truncated or not an image.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read image {str(path)!r}: {err.strerror or err}") from err
    return decode_bytes(data, name=repr(str(path)))


def scan(
    paths: Iterable[str | os.PathLike[str]],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Decode every file once and split the list into usable and broken images.

    Meant for small folders checked up front (the test-set builder), where a clear report of
    the broken files is worth a full decode of each.

    Args:
        paths: image files.
        progress: called after each file with the number of files checked so far.

    Returns:
        ``(ok, bad)``: the decodable paths in input order, and ``(path, reason)`` for the rest.
    """
    ok: list[Path] = []
    bad: list[tuple[Path, str]] = []
    for i, p in enumerate(paths, start=1):
        p = Path(p)
        try:
            load_image(p)
        except DataError as err:
            bad.append((p, err.message))
        else:
            ok.append(p)
        if progress is not None:
            progress(i)
    return ok, bad


class ImageFolder(torch.utils.data.Dataset):
    """A map-style dataset over image files that survives broken files.

    Items are ``{"image": Tensor[3,H,W] float32 in [0,1], "index": int, "path": str}``, where
    ``image`` has gone through ``transform``; a file that cannot be decoded gives ``None``
    instead (with one warning per file and process). Use :func:`collate_skip` as the
    DataLoader's ``collate_fn`` to drop those. The object is picklable, so it works in
    DataLoader worker processes, provided ``transform`` is picklable too (e.g.
    :class:`nstzoo.data.transforms.ResizeCrop`, not a lambda).

    Args:
        root_or_paths: a folder (listed with :func:`list_images`) or a sequence of files.
        transform: applied to each decoded ``[3,H,W]`` image.

    Raises:
        DataError: the folder is missing or empty, or the path list is empty.
    """

    def __init__(
        self,
        root_or_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        if isinstance(root_or_paths, (str, os.PathLike)):
            self.root: Path | None = Path(root_or_paths)
            self.paths = list_images(self.root)
        else:
            self.root = None
            self.paths = [Path(p) for p in root_or_paths]
            if not self.paths:
                raise DataError("ImageFolder was given an empty list of image paths")
        self.transform = transform
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        path = self.paths[index]
        try:
            image = load_image(path)
        except DataError as err:
            if index not in self._warned:
                self._warned.add(index)
                warnings.warn(f"skipping unreadable image: {err.message}", RuntimeWarning, stacklevel=2)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "index": index, "path": str(path)}

    def __repr__(self) -> str:
        where = str(self.root) if self.root is not None else f"{len(self.paths)} paths"
        return f"ImageFolder({where!r}, n={len(self.paths)}, transform={self.transform!r})"


def collate_skip(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """DataLoader ``collate_fn`` that drops ``None`` items (unreadable files) and counts them.

    Args:
        batch: items from :class:`ImageFolder`.

    Returns:
        ``{"image": [B',3,H,W], "index": LongTensor [B'], "path": list[str], "skipped": int}``
        where ``B'`` is the number of good items (0 gives an empty ``[0,3,0,0]`` image tensor)
        and ``skipped`` how many were dropped; the consumer sums ``skipped`` over batches.

    Raises:
        DataError: the good images differ in size (give the dataset a cropping transform).
    """
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return {
            "image": torch.empty(0, 3, 0, 0),
            "index": torch.empty(0, dtype=torch.long),
            "path": [],
            "skipped": skipped,
        }
    shapes = {tuple(item["image"].shape) for item in good}
    if len(shapes) > 1:
        raise DataError(
            f"images in one batch differ in size {sorted(shapes)}; first: {good[0]['path']!r}",
            hint="give the ImageFolder a transform such as nstzoo.data.ResizeCrop(256)",
        )
    return {
        "image": torch.stack([item["image"] for item in good]),
        "index": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "path": [item["path"] for item in good],
        "skipped": skipped,
    }


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``[3,H,W]`` in [0, 1] as PNG or JPEG (by extension), atomically."""
    from torchvision.io import encode_jpeg, encode_png

    path = Path(path)
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    suffix = path.suffix.lower()
    if suffix == ".png":
        data = encode_png(pixels)
    elif suffix in (".jpg", ".jpeg"):
        data = encode_jpeg(pixels, quality=95)
    else:
        raise DataError(f"cannot write {path}: use a .png or .jpg file name")

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(data.numpy().tobytes())

    return atomic_write(path, write)
