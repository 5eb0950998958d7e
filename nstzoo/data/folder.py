"""Image folders: list, decode and serve images as float tensors.

Every image leaves this module as a float32 tensor ``[3, H, W]`` with values in ``[0, 1]``,
whatever it was on disk (grayscale, palette, RGBA, 16-bit PNG, CMYK JPEG, WebP, BMP).

Decoding is :mod:`nstzoo.data.decode`: the header is checked first (format list, pixel limit),
and no file, however damaged or hostile, can crash the process or exhaust its memory.
:func:`list_images` follows symbolic links once, drops duplicates and loops, and reports what it
skipped and why (:class:`ListSummary`).

A folder scraped from the web always holds a few broken files. :class:`ImageFolder` therefore
never lets one kill a training run: ``__getitem__`` returns ``None`` for a file that cannot be
decoded (and warns once with its path), and :func:`collate_skip` drops those items and counts
them, so the consumer can report how many were skipped.
"""

from __future__ import annotations

import errno
import heapq
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import DataError
from ..files import atomic_write
from .decode import (
    IMAGE_EXTENSIONS,
    UNSUPPORTED_EXTENSIONS,
    CorruptImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    decode_bytes,
    max_file_bytes,
    probe_file,
    read_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "SKIP_REASONS",
    "ListSummary",
    "ImageList",
    "list_images",
    "load_image",
    "decode_bytes",
    "ImageFolder",
    "collate_skip",
    "scan",
    "save_image",
]

#: Why :func:`list_images` leaves a file or folder out (the keys of :attr:`ListSummary.skipped`).
SKIP_REASONS: tuple[str, ...] = ("unreadable", "unsupported format", "too large", "duplicate", "loop")


@dataclass
class ListSummary:
    """What :func:`list_images` found: how many images it listed and what it skipped, by reason.

    ``skipped`` maps each reason of :data:`SKIP_REASONS` to the paths left out for it: files that
    cannot be read (broken links, no permission, pipes), images in formats nstzoo does not read
    (``.heic``, ``.svg`` ...), files larger than any image under the pixel limit, a second path to
    a file or folder already listed (through a symbolic link or a hard link), and symbolic links
    that lead back into their own parent folders. ``other_files`` counts files that are not
    images by name (``.txt``, ``.json`` ...): ignored, not reported.
    """

    root: Path
    listed: int = 0
    skipped: dict[str, list[Path]] = field(default_factory=lambda: {r: [] for r in SKIP_REASONS})
    other_files: int = 0

    @property
    def total_skipped(self) -> int:
        return sum(len(paths) for paths in self.skipped.values())

    def details(self) -> str:
        """``"2 duplicate ('a/x.png', 'b/y.png'), 1 loop ('b/up')"``: counts by reason, two examples each."""
        parts = []
        for reason in SKIP_REASONS:
            paths = self.skipped[reason]
            if paths:
                shown = ", ".join(repr(_rel(p, self.root)) for p in paths[:2]) + (", ..." if len(paths) > 2 else "")
                parts.append(f"{len(paths)} {reason} ({shown})")
        return ", ".join(parts)

    def line(self) -> str:
        """The one-line warning: where, how many listed, how many skipped and why."""
        return (f"image folder {str(self.root)!r}: listed {self.listed} images, skipped {self.total_skipped} "
                f"entries: {self.details()}")

    def as_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "listed": self.listed, "other_files": self.other_files,
                "skipped": {r: [str(p) for p in paths] for r, paths in self.skipped.items() if paths}}


class ImageList(list[Path]):  # a list subclass, so that every caller of list_images keeps working
    """The sorted image paths of :func:`list_images`, with its :class:`ListSummary` as ``.summary``."""

    summary: ListSummary


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _is_loop_link(link: str, parent: str) -> bool:
    """True when the folder ``link`` points to contains the folder it sits in (following it loops)."""
    target = os.path.realpath(link)
    here = os.path.realpath(parent)
    return here == target or here.startswith(target.rstrip(os.sep) + os.sep)


def list_images(root: str | os.PathLike[str], recursive: bool = True, *, probe: bool = False,
                max_pixels: int | None = None, warn: bool = True) -> ImageList:
    """All image files under ``root`` (by suffix, see :data:`IMAGE_EXTENSIONS`), sorted.

    Hidden files and folders (names starting with ``.``) are ignored. The order is the sorted
    POSIX form of each path relative to ``root``, so it does not depend on the file system.

    Symbolic links are followed, but every folder is read once: a link back into its own parent
    folders is a loop and is not followed; a second path to a folder or a file already listed (a
    link, a hard link) is a duplicate and is dropped, keeping the path without links (else the
    first in sorted order). What was skipped is counted by reason in the returned list's
    ``summary`` (a :class:`ListSummary`) and, when anything was, reported in one warning.

    Args:
        root: a folder.
        recursive: also look in sub-folders.
        probe: also read each image's header (not its pixels): files that are not images in a
            supported format, too large or with a damaged header are then skipped here rather
            than when they are decoded. Costs one small read per file.
        max_pixels: the pixel limit for ``probe`` and the file-size check (default
            ``$NSTZOO_MAX_PIXELS``, else 2**26).
        warn: issue the one-line ``RuntimeWarning`` when something was skipped.

    Raises:
        DataError: ``root`` does not exist, is not a folder, or holds no usable image files.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is not a folder")
    summary = ListSummary(root)
    byte_limit = max_file_bytes(max_pixels)
    root_stat = root.stat()
    seen_dirs: set[tuple[int, int]] = set()
    # Folders reached without a link are read before any reached through one, so that a folder
    # is read (and its files listed) under its own path rather than a link's; a folder counts as
    # seen when it is read, not when it is found. The heap keeps the order deterministic.
    pending: list[tuple[bool, str, str, tuple[int, int]]] = [(False, "", str(root), (root_stat.st_dev, root_stat.st_ino))]
    candidates: list[tuple[bool, str, Path, tuple[int, int]]] = []
    while pending:
        via_link, rel, folder, dir_id = heapq.heappop(pending)
        if dir_id in seen_dirs:
            summary.skipped["duplicate"].append(Path(folder))
            continue
        seen_dirs.add(dir_id)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            summary.skipped["unreadable"].append(Path(folder))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, entry_rel = Path(entry.path), f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_link = entry.is_symlink()
                info = entry.stat(follow_symlinks=True)
            except OSError as err:
                if err.errno == errno.ELOOP:  # links that lead to each other
                    summary.skipped["loop"].append(path)
                elif _is_image_or_unsupported(entry.name):  # e.g. a broken link named x.png
                    summary.skipped["unreadable"].append(path)
                continue
            if stat.S_ISDIR(info.st_mode):
                if not recursive:
                    continue
                if is_link and _is_loop_link(entry.path, folder):
                    summary.skipped["loop"].append(path)
                else:
                    heapq.heappush(pending, (via_link or is_link, entry_rel, entry.path, (info.st_dev, info.st_ino)))
                continue
            suffix = path.suffix.lower()
            if suffix not in IMAGE_EXTENSIONS:
                if suffix in UNSUPPORTED_EXTENSIONS:
                    summary.skipped["unsupported format"].append(path)
                else:
                    summary.other_files += 1
                continue
            if not stat.S_ISREG(info.st_mode) or not os.access(path, os.R_OK):
                summary.skipped["unreadable"].append(path)
            elif info.st_size > byte_limit:
                summary.skipped["too large"].append(path)
            else:
                candidates.append((via_link or is_link, entry_rel, path, (info.st_dev, info.st_ino)))
    # One path per file: the first without links, else the first in sorted order.
    candidates.sort(key=lambda c: (c[0], c[1]))
    kept: dict[tuple[int, int], tuple[str, Path]] = {}
    for _, entry_rel, path, file_id in candidates:
        if file_id in kept:
            summary.skipped["duplicate"].append(path)
        else:
            kept[file_id] = (entry_rel, path)
    images = ImageList(path for _, path in sorted(kept.values(), key=lambda kv: kv[0]))
    if probe:
        images = _probe(images, summary, max_pixels)
    summary.listed = len(images)
    images.summary = summary
    if not images:
        skipped = f"; skipped {summary.details()}" if summary.total_skipped else ""
        raise DataError(
            f"no images in {str(root)!r} (looked for {', '.join(IMAGE_EXTENSIONS)}"
            f"{'' if recursive else ', not in sub-folders'}){skipped}"
        )
    if warn and summary.total_skipped:
        warnings.warn(summary.line(), RuntimeWarning, stacklevel=2)
    return images


def _is_image_or_unsupported(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix in IMAGE_EXTENSIONS or suffix in UNSUPPORTED_EXTENSIONS


def _probe(paths: list[Path], summary: ListSummary, max_pixels: int | None) -> ImageList:
    """Keep the paths whose header reads as a supported image within the pixel limit."""
    kept = ImageList()
    for path in paths:
        try:
            probe_file(path, max_pixels=max_pixels)
        except ImageTooLargeError:
            summary.skipped["too large"].append(path)
        except UnsupportedImageError as err:
            summary.skipped["unreadable" if "empty" in err.message else "unsupported format"].append(path)
        except (CorruptImageError, DataError):
            summary.skipped["unreadable"].append(path)
        else:
            kept.append(path)
    return kept


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> Tensor:
    """Read and decode one image file (see :func:`nstzoo.data.decode.decode_bytes`).

    Grayscale images are repeated to three channels; RGBA, LA and palette images with
    transparency are composited over white; 16-bit grayscale is scaled by 1/65535; JPEG EXIF
    orientation is applied; animated GIF/WebP give their first frame.

    Args:
        path: an image file (JPEG, PNG, WebP, BMP, GIF or TIFF).
        max_pixels: refuse images whose header claims more pixels (default ``$NSTZOO_MAX_PIXELS``,
            else 2**26).

    Returns:
        ``[3, H, W]`` float32 with values in ``[0, 1]``.

    Raises:
        DataError: naming the file, when it is missing, empty, truncated, corrupt, too large or
            not an image in a supported format (subclasses in :mod:`nstzoo.data.decode` say which).
    """
    return read_image(path, max_pixels=max_pixels)


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
