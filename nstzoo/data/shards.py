"""Tar shards for millions of images, read by global index.

The paper trains on about 4M images; listing (and stat-ing) that many files at every start is slow
and many file systems handle millions of small files badly. ``nstzoo data shard`` therefore packs
image folders into tar shards in the webdataset layout, written with :class:`webdataset.ShardWriter`:

    shard-000000.tar   0000000000.jpg  0000000000.json  0000000001.png  0000000001.json ...
    shard-000001.tar   ...
    shards.json        {"wids_version": 1, "shardlist": [{"url": "shard-000000.tar", "nsamples": 1000}, ...]}

A sample's key is its global index (zero-padded to :data:`KEY_DIGITS` digits), its image member holds
the file's original bytes (never re-encoded) under the file's own suffix, lower-cased, and its
``.json`` member records where it came from (``{"folder", "path", "index"}``). The global order
is the order of :func:`nstzoo.data.folder.list_images`, folder after folder, so index ``i`` of the
shards is index ``i`` of the folders and a training run draws the same images from either.

:class:`ShardSource` reads them by global index through ``wids`` (webdataset's indexed-dataset
package), because the training data path draws image *indices* from a generator seeded by
``(seed, step)`` (:mod:`nstzoo.data.steps`). Opening a source reads ``shards.json`` only; a shard is
opened (and its members indexed by wids) the first time one of its images is read, in each process.

Random-access cost, measured with wids 0.1.11: opening a shard indexes all its members (about
15-20 us per image on one core, so 15-20 ms for a 1000-image shard) and keeps about 530 bytes per image
in memory while the shard stays open; at most ``max_open_shards`` shards stay open per process
(least recently used first out, two file descriptors each). Training draws images uniformly at
random, so the fraction of reads that re-open a shard is about ``1 - max_open_shards / shards``:
keep shards small (the default 1000 images) and, where memory allows, ``max_open_shards`` at the
number of shards (4M images: 4000 shards, about 2 GB of index per DataLoader worker).
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import torch
import webdataset
import wids
from torch import Tensor
from webdataset.shardlists import expand_urls
from wids.wids import IndexedTarSamples, LRUShards

from ..errors import DataError
from ..files import atomic_write
from .folder import IMAGE_EXTENSIONS, decode_bytes, list_images, load_image

__all__ = [
    "ConcatSource",
    "open_sources",
    "DEFAULT_MAX_OPEN_SHARDS",
    "DEFAULT_SHARD_SIZE",
    "INDEX_NAME",
    "FolderSource",
    "ShardSource",
    "ShardSummary",
    "SourceStream",
    "iter_indices",
    "open_source",
    "write_shards",
]

#: The shard index file (a wids shard-index JSON) in a shard folder.
INDEX_NAME = "shards.json"
#: Finished shards of an unfinished ``nstzoo data shard`` run (removed once ``shards.json`` is written).
PROGRESS_NAME = "shards.progress.json"
SHARD_PATTERN = "shard-%06d.tar"
#: Digits of a sample key (the zero-padded global index): up to 10 billion images.
KEY_DIGITS = 10
#: Images per shard. Small on purpose: a random read that finds its shard closed re-indexes it.
DEFAULT_SHARD_SIZE = 1000
#: Shards kept open per process (each holds its member index in memory and two file descriptors).
DEFAULT_MAX_OPEN_SHARDS = 256
#: webdataset's own limit: a shard is also closed once it holds this many bytes.
MAX_SHARD_BYTES = 3e9
FORMAT_VERSION = 1

_SHARD_RE = re.compile(r"shard-(\d{6,})\.tar")
_PARTIAL_RE = re.compile(r"shard-\d{6,}\.tar\.partial")
# atomic_write's temporary files, left behind only when the process was killed mid-write.
_TMP_RE = re.compile(r"\.(shards\.json|shards\.progress\.json)\.\d+\.[0-9a-f]{8}\.tmp")


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


@dataclass
class ShardSummary:
    """What :func:`write_shards` did.

    ``images``/``shards``/``bytes`` describe the whole shard set; ``written_images`` and
    ``written_shards`` this run only (less when it resumed an interrupted run, 0 when the set was
    already complete). ``unreadable`` are source files that could not be read: each keeps its index
    with an empty image member (so indices still match the folders) that readers skip.
    """

    out: Path
    index: Path
    images: int
    shards: int
    bytes: int
    written_images: int
    written_shards: int
    resumed_from: int
    already_complete: bool
    unreadable: list[str] = field(default_factory=list)
    listing_skipped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "index": str(self.index), "images": self.images, "shards": self.shards,
                "bytes": self.bytes, "written_images": self.written_images, "written_shards": self.written_shards,
                "resumed_from": self.resumed_from, "already_complete": self.already_complete,
                "unreadable": list(self.unreadable), "listing_skipped": dict(self.listing_skipped)}


@dataclass(frozen=True)
class _Item:
    folder: str  # the folder as given, normalised by Path (what list_images' paths start with)
    rel: str  # POSIX path relative to the folder
    path: Path


def _list_sources(folders: Sequence[str | os.PathLike[str]]) -> tuple[list[_Item], dict[str, int]]:
    """Every image of every folder, folder after folder, each in :func:`list_images` order."""
    seen: dict[str, str] = {}
    items: list[_Item] = []
    skipped: dict[str, int] = {}
    for folder in folders:
        root = Path(folder)
        paths = list_images(root)  # DataError naming the folder when it is missing or holds no images
        real = os.path.realpath(root)
        if real in seen:
            raise DataError(f"folder {str(root)!r} is given twice (also as {seen[real]!r}); "
                            "its images would be sharded twice")
        seen[real] = str(root)
        for reason, dropped in paths.summary.skipped.items():
            if dropped:
                skipped[reason] = skipped.get(reason, 0) + len(dropped)
        items.extend(_Item(str(root), p.relative_to(root).as_posix(), p) for p in paths)
    return items, skipped


def _signature(items: Sequence[_Item], shard_size: int) -> dict[str, Any]:
    """What a run shards: a resumed run must shard exactly the same list, the same way."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.folder}\0{item.rel}\n".encode("utf-8", "surrogateescape"))
    return {"folders": list(dict.fromkeys(i.folder for i in items)), "images": len(items),
            "shard_size": shard_size, "listing_sha256": digest.hexdigest()}


def _is_shard_file(name: str) -> bool:
    return bool(name in (INDEX_NAME, PROGRESS_NAME) or _SHARD_RE.fullmatch(name) or _PARTIAL_RE.fullmatch(name)
                or _TMP_RE.fullmatch(name))


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is a file, or that holds other files than shards (unless ``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {str(out)!r} is a file, not a folder")
    if not out.is_dir() or overwrite:
        return
    if (out / INDEX_NAME).is_file() or (out / PROGRESS_NAME).is_file():
        return  # a shard folder already (other files were let in by an earlier --overwrite): resume or refuse later
    others = sorted(n for n in os.listdir(out) if not _is_shard_file(n))
    if others:
        shown = ", ".join(repr(n) for n in others[:3]) + (", ..." if len(others) > 3 else "")
        raise DataError(f"--out {str(out)!r} holds {len(others)} entries that are not shard files ({shown})",
                        hint="choose an empty folder, or pass --overwrite to write the shards there anyway")


def _clear_out(out: Path) -> None:
    """Remove this command's own files (``--overwrite``); a user's other files stay."""
    for name in os.listdir(out):
        if _is_shard_file(name):
            (out / name).unlink()


def _read_json(path: Path) -> dict[str, Any]:
    return _read_json_text(path)[1]


def _read_json_text(path: Path) -> tuple[str, dict[str, Any]]:
    """``(text, object)`` of a JSON file holding an object; DataError naming it otherwise."""
    try:
        text = path.read_text()
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {str(path)!r}: {err}") from None
    if not isinstance(data, dict):
        raise DataError(f"{str(path)!r} is not a JSON object")
    return text, data


def _resume_state(out: Path, signature: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Finished shards of an earlier run of the same input into ``out``, and the unreadable sources
    of the whole set when it is already complete (else None)."""
    index, progress = out / INDEX_NAME, out / PROGRESS_NAME
    hint = "pass --overwrite to replace them, or choose another --out folder"
    if index.is_file():
        data = _read_json(index)
        meta = data.get("nstzoo")
        if not isinstance(meta, dict) or meta.get("signature") != signature:
            raise DataError(f"{str(out)!r} already holds shards of other images or another --shard-size", hint=hint)
        return list(data["shardlist"]), list(meta.get("unreadable", []))
    if not progress.is_file():
        return [], None
    data = _read_json(progress)
    if data.get("signature") != signature:
        raise DataError(f"{str(out)!r} holds an unfinished shard run of other images or another --shard-size",
                        hint=hint)
    done: list[dict[str, Any]] = []
    for shard in data.get("shards", []):
        # Trust a recorded shard only while its file is still there, whole: rewrite from the first that is not.
        path = out / shard["url"]
        if not path.is_file() or path.stat().st_size != shard["filesize"]:
            break
        done.append(shard)
    return done, None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1) + "\n"))


def _read_source(item: _Item) -> tuple[bytes, str | None]:
    """The file's bytes as they are on disk, or ``(b"", reason)`` when it cannot be read."""
    try:
        with open(item.path, "rb") as fh:
            return fh.read(), None
    except OSError as err:
        return b"", (err.strerror or str(err)).lower()


class _ShardSetWriter:
    """webdataset's ShardWriter, with each shard written to ``.partial`` and renamed once whole.

    A shard is recorded in :data:`PROGRESS_NAME` only after its rename, so a killed run leaves
    finished shards (kept on resume) and at most one partial file (rewritten).
    """

    def __init__(self, out: Path, shard_size: int, signature: dict[str, Any], done: list[dict[str, Any]]):
        self.out, self.signature, self.done = out, signature, done
        self.files: dict[str, BinaryIO] = {}
        self.unreadable: list[str] = []  # of the shard being written
        self.writer = webdataset.ShardWriter(
            str(out / SHARD_PATTERN), maxcount=shard_size, maxsize=MAX_SHARD_BYTES, post=self._finish_shard,
            start_shard=len(done), verbose=0, opener=self._open_shard,
            # encoder=False: members are stored as given, never re-encoded; a fixed mtime makes a
            # resumed run's shards byte-identical to an uninterrupted run's.
            encoder=False, mtime=0)

    def _open_shard(self, fname: str) -> BinaryIO:
        fh = open(fname + ".partial", "wb")
        self.files[fname] = fh
        return fh

    def _finish_shard(self, fname: str) -> None:
        fh = self.files.pop(fname)
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(fname + ".partial", fname)
        self.done.append({"url": os.path.basename(fname), "nsamples": self.writer.count,
                          "filesize": os.path.getsize(fname), "unreadable": self.unreadable})
        self.unreadable = []
        _write_json(self.out / PROGRESS_NAME, {"signature": self.signature, "shards": self.done})

    def write(self, key: str, ext: str, data: bytes, meta: dict[str, Any], unreadable: str | None) -> None:
        # ShardWriter finishes the previous shard (calling _finish_shard) before it writes this sample.
        self.writer.write({"__key__": key, ext: data, "json": json.dumps(meta, sort_keys=True).encode()})
        if unreadable is not None:
            self.unreadable.append(unreadable)

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Stop without recording the shard being written (ShardWriter.close would finish it)."""
        self.writer.post = None
        with contextlib.suppress(Exception):
            self.writer.close()
        for fname, fh in list(self.files.items()):
            fh.close()
            with contextlib.suppress(OSError):
                os.unlink(fname + ".partial")
        self.files.clear()


def write_shards(folders: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                 shard_size: int = DEFAULT_SHARD_SIZE, *, overwrite: bool = False,
                 progress: Callable[[int], None] | None = None,
                 on_listed: Callable[[int, int], None] | None = None) -> ShardSummary:
    """Pack the images of ``folders`` into tar shards in ``out``, with ``shards.json`` written last.

    Resumable: shards finished by an interrupted run of the same input are kept and the rest
    (including a half-written shard) are rewritten, so the result equals an uninterrupted run's,
    byte for byte. A complete set of the same input is left as it is.

    Args:
        folders: image folders, listed with :func:`nstzoo.data.folder.list_images`; global index
            order is folder after folder, each in its sorted order.
        out: the shard folder; it may hold only shard files unless ``overwrite``.
        shard_size: images per shard (a shard also closes at 3 GB).
        overwrite: remove this command's files already in ``out`` (shards, index) and start afresh.
        progress: called with ``1`` after each image written.
        on_listed: called once with ``(images in total, images already sharded)`` before writing.

    Raises:
        DataError: a folder is missing, holds no images or is given twice; ``out`` holds other
            files, or shards of another input (without ``overwrite``).
    """
    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1, got {shard_size}")
    if not folders:
        raise DataError("no image folders given")
    out = Path(out)
    _check_out(out, overwrite)  # before listing: a wrong --out fails at once, not after listing millions
    items, listing_skipped = _list_sources(folders)
    signature = _signature(items, shard_size)
    if overwrite and out.is_dir():
        _clear_out(out)
    out.mkdir(parents=True, exist_ok=True)
    done, complete_unreadable = _resume_state(out, signature)
    index_path = out / INDEX_NAME
    if complete_unreadable is not None:
        if on_listed is not None:
            on_listed(len(items), len(items))
        return ShardSummary(out, index_path, len(items), len(done), sum(int(s.get("filesize", 0)) for s in done),
                            0, 0, len(items), True, complete_unreadable, listing_skipped)
    # Anything past the recorded shards is left over from the interrupted run: it is rewritten.
    for name in os.listdir(out):
        match = _SHARD_RE.fullmatch(name)
        if (match and int(match.group(1)) >= len(done)) or _PARTIAL_RE.fullmatch(name) or _TMP_RE.fullmatch(name):
            (out / name).unlink()
    start = sum(int(s["nsamples"]) for s in done)
    if on_listed is not None:
        on_listed(len(items), start)
    written_before = len(done)
    if start < len(items):
        writer = _ShardSetWriter(out, shard_size, signature, done)
        try:
            for index in range(start, len(items)):
                item = items[index]
                data, error = _read_source(item)
                meta: dict[str, Any] = {"folder": item.folder, "path": item.rel, "index": index}
                if error is not None:
                    # Keep the index (the folder source has this file at this index too) with an empty
                    # image member, which every reader reports as unreadable and skips.
                    meta["error"] = error
                writer.write(f"{index:0{KEY_DIGITS}d}", item.path.suffix.lower().lstrip("."), data, meta,
                             None if error is None else str(item.path))
                if progress is not None:
                    progress(1)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    unreadable = [name for s in done for name in s.get("unreadable", [])]
    _write_json(index_path, {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": out.resolve().name,
        "shardlist": [{"url": s["url"], "nsamples": s["nsamples"], "filesize": s["filesize"]} for s in done],
        # nstzoo's own block (wids ignores it): keys are global indices; what was sharded, for resumes.
        "nstzoo": {"format": FORMAT_VERSION, "key_digits": KEY_DIGITS, "images": len(items),
                   "signature": signature, "unreadable": unreadable},
    })
    (out / PROGRESS_NAME).unlink(missing_ok=True)
    return ShardSummary(out, index_path, len(items), len(done), sum(int(s["filesize"]) for s in done),
                        len(items) - start, len(done) - written_before, start, False, unreadable, listing_skipped)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


class FolderSource:
    """Image files as a source: ``len``, ``name(i)``, ``read(i)``, ``read_bytes(i)``.

    The same interface as :class:`ShardSource` (and what :class:`nstzoo.data.steps.StepBatches`
    takes), so a folder and its shards are interchangeable.

    Args:
        paths: image files, in index order (e.g. :func:`nstzoo.data.folder.list_images`).
        max_pixels: refuse images whose header claims more pixels (default: the decoder's limit).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, max_pixels: int | None = None):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise DataError("FolderSource was given an empty list of image paths")
        self.max_pixels = max_pixels

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], **kwargs: Any) -> FolderSource:
        """All images under ``folder``, in :func:`list_images` order."""
        return cls(list_images(folder), **kwargs)

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        """The file's path."""
        return str(self.paths[index])

    def read_bytes(self, index: int) -> bytes:
        """The file's bytes, as on disk."""
        path = self.paths[index]
        try:
            return path.read_bytes()
        except OSError as err:
            raise DataError(f"cannot read image {str(path)!r}: {(err.strerror or str(err)).lower()}") from None

    def read(self, index: int) -> Tensor:
        """``[3, H, W]`` float32 in ``[0, 1]``; DataError naming the file when it cannot be decoded."""
        return load_image(self.paths[index], max_pixels=self.max_pixels)

    def __repr__(self) -> str:
        return f"FolderSource(n={len(self.paths)})"


def _local_path(url: str) -> str | None:
    """The file a shard URL names (normalised), or None for a remote one."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") and not parsed.netloc:
        return os.path.normpath(parsed.path)
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow what wids prints (a line per dataset opened, tar headers that fail to parse, file names
    without a suffix): on stdout it would corrupt ``--json`` output, and the error raised says it all."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


class _InPlaceShards(LRUShards):
    """wids' LRU of open shards, opening local shard files where they are.

    wids' own copies every shard into a cache folder and takes a lock file beside it: that doubles
    the disk used, and fails on read-only dataset mounts; local shards need neither. A shard that
    cannot be opened, or whose sample count differs from the index, raises DataError naming it
    (and is not re-opened on every read).
    """

    def __init__(self, lru_size: int, nsamples: dict[str, int]):
        super().__init__(lru_size, localname=_local_path)
        self.nsamples = nsamples
        self.broken: dict[str, tuple[str, str | None]] = {}  # path -> (message, hint)

    def get_shard(self, url: str) -> Any:  # -> wids.wids.IndexedTarSamples
        self.accesses += 1
        if url in self.lru:
            self.last_missed = False
            return self.lru[url]
        path = _local_path(url)
        if path in self.broken:
            raise DataError(*self.broken[path])
        try:
            with _quiet():
                shard = IndexedTarSamples(path=path)
        except Exception as err:  # noqa: BLE001 - missing or empty file, a tar header that does not parse
            reason = err.strerror.lower() if isinstance(err, OSError) and err.strerror else str(err)
            self.broken[path] = (f"cannot open shard {path!r}: {reason or type(err).__name__}", None)
            raise DataError(*self.broken[path]) from None
        if len(shard) != self.nsamples[path]:
            shard.close()
            self.broken[path] = (f"shard {path!r} holds {len(shard)} samples, its index says "
                                 f"{self.nsamples[path]}: the index does not match the shard files",
                                 "rewrite the shards with `nstzoo data shard --overwrite`")
            raise DataError(*self.broken[path])
        self.lru[url] = shard
        self.misses += 1
        self.last_missed = True
        return shard


def _image_member(sample: dict[str, Any]) -> str | None:
    """The sample's image member (``".jpg"``...): the one whose last suffix is an image format."""
    # wids keys members by everything after the first dot of their name (".png", ".seg.png").
    exts = [k for k in sample if k.startswith(".") and os.path.splitext("x" + k)[1].lower() in IMAGE_EXTENSIONS]
    return exts[0] if exts else None


class ShardSource:
    """Images in tar shards, by global index: ``len``, ``name(i)``, ``read(i)``, ``read_bytes(i)``.

    Reads through ``wids.ShardListDataset``. Construction reads the shard index only, so it takes
    the same time for a thousand images or millions; shards are opened on first use, in each
    process (a DataLoader worker, forked or spawned, opens its own).

    Args:
        index: a ``shards.json`` (wids shard index; relative URLs are relative to it) or a folder
            holding one.
        max_open_shards: shards kept open per process (see the module notes on memory).
        max_pixels: refuse images whose header claims more pixels (default: the decoder's limit).

    Raises:
        DataError: the index is missing or malformed.
    """

    def __init__(self, index: str | os.PathLike[str], *, max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS,
                 max_pixels: int | None = None):
        path = Path(index)
        if path.is_dir():
            path = path / INDEX_NAME
        if not path.is_file():
            raise DataError(f"shard index {str(path)!r} does not exist",
                            hint="write one with `nstzoo data shard DIR --out SHARDS`")
        path = path.resolve()
        text, spec = _read_json_text(path)
        if spec.get("wids_version") != 1 or not isinstance(spec.get("shardlist"), list) or not spec["shardlist"]:
            raise DataError(f"{str(path)!r} is not a wids shard index: it needs \"wids_version\": 1 and a "
                            "non-empty \"shardlist\"")
        if spec.get("datasets"):
            raise DataError(f"{str(path)!r} refers to other datasets (\"datasets\"); nstzoo reads one shard list")
        base = str(path.parent)
        shards = []
        for entry in spec["shardlist"]:
            if not (isinstance(entry, dict) and isinstance(entry.get("url"), str)
                    and isinstance(entry.get("nsamples"), int) and entry["nsamples"] >= 0):
                raise DataError(f"{str(path)!r}: bad shard entry {entry!r} (needs a \"url\" and \"nsamples\")")
            url = entry["url"]
            if _local_path(url) is None:
                raise DataError(f"{str(path)!r}: shard {url!r} is not a local file; nstzoo reads local shards only",
                                hint="copy the shards to a local folder next to their shards.json")
            shards.append((os.path.join(base, _local_path(url) or ""), entry["nsamples"]))
        meta = spec.get("nstzoo")
        key_digits = meta.get("key_digits") if isinstance(meta, dict) else None
        self._setup(str(path), shards, key_digits=key_digits if isinstance(key_digits, int) else None, max_open_shards=max_open_shards,
                    max_pixels=max_pixels, wids_input=(text, base))

    @classmethod
    def from_tar_files(cls, paths: Sequence[str | os.PathLike[str]], *,
                       max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS, max_pixels: int | None = None) -> ShardSource:
        """Shards without an index: each tar is opened once here to count its samples (work per shard).

        The global order is the order of ``paths``. Write a ``shards.json`` (``nstzoo data shard``)
        to skip this step on every start.
        """
        shards = []
        for p in paths:
            path = os.path.abspath(p)
            try:
                with _quiet():
                    tar = IndexedTarSamples(path=path)
            except Exception as err:  # noqa: BLE001 - see _InPlaceShards.get_shard
                reason = err.strerror.lower() if isinstance(err, OSError) and err.strerror else str(err)
                raise DataError(f"cannot open shard {path!r}: {reason or type(err).__name__}") from None
            shards.append((path, len(tar)))
            tar.close()
        if not shards:
            raise DataError("no shard files given")
        self = cls.__new__(cls)
        self._setup(f"{len(shards)} tar files", shards, key_digits=None, max_open_shards=max_open_shards,
                    max_pixels=max_pixels, wids_input=None)
        return self

    def _setup(self, origin: str, shards: list[tuple[str, int]], *, key_digits: int | None, max_open_shards: int,
               max_pixels: int | None, wids_input: tuple[str, str] | None) -> None:
        if max_open_shards < 1:
            raise DataError(f"max_open_shards must be at least 1, got {max_open_shards}")
        self.origin = origin
        self.urls = [os.path.normpath(url) for url, _ in shards]  # local paths, as _local_path gives them
        self.nsamples = [n for _, n in shards]
        self.starts = [0]
        for n in self.nsamples:
            self.starts.append(self.starts[-1] + n)
        if self.starts[-1] == 0:
            raise DataError(f"shards {origin!r} hold no samples")
        # Keys are checked against the global index when the shards are nstzoo's own: a shard list
        # out of step with its files then fails loudly instead of returning other images.
        self.key_digits = key_digits
        self.max_open_shards, self.max_pixels = max_open_shards, max_pixels
        self._wids_input = wids_input
        self._dataset: Any = None
        self._pid: int | None = None

    # A forked or unpickled copy must not use its parent's open shards: drop them and reopen lazily.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_dataset"], state["_pid"] = None, None
        return state

    def _wids(self) -> Any:  # -> wids.ShardListDataset
        if self._dataset is None or self._pid != os.getpid():
            # transformations=[]: samples stay raw bytes (wids' default decodes them with PIL).
            # lru_size=1: wids' own shard cache is replaced below by _InPlaceShards of max_open_shards.
            kwargs = dict(transformations=[], lru_size=1, localname=_local_path)
            # wids prints a line about every dataset it opens; once per worker process is noise.
            with _quiet():
                if self._wids_input is not None:
                    text, base = self._wids_input
                    dataset = wids.ShardListDataset(io.StringIO(text), base=base, **kwargs)
                else:
                    dataset = wids.ShardListDataset([{"url": u, "nsamples": n} for u, n in zip(self.urls, self.nsamples)],
                                               **kwargs)
            dataset.cache = _InPlaceShards(self.max_open_shards, dict(zip(self.urls, self.nsamples)))
            # wids prints a cache-miss warning to stdout (it would corrupt --json output); the miss rate
            # of uniform random reads is a known cost here (module notes), not a surprise to report.
            dataset.check_cache_misses = lambda: None
            self._dataset, self._pid = dataset, os.getpid()
        return self._dataset

    def __len__(self) -> int:
        return self.starts[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        """``(shard number, index inside the shard)`` of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def _sample(self, index: int) -> tuple[dict[str, Any], str]:
        """The wids sample of ``index`` (``{".png": BytesIO, ".json": BytesIO, "__key__": ...}``) and its shard."""
        index = int(index)
        shard, _ = self._locate(index)
        sample = self._wids()[index]  # DataError from InPlaceShards when the shard cannot be opened
        url = _local_path(sample["__shard__"]) or sample["__shard__"]
        if url != self.urls[shard]:  # wids and this class must agree on where index i lives
            raise DataError(f"index {index}: wids read shard {url!r}, expected {self.urls[shard]!r}")
        if self.key_digits is not None and sample["__key__"] != f"{index:0{self.key_digits}d}":
            raise DataError(f"shard {url!r}: sample {sample['__shardindex__']} has key {sample['__key__']!r}, "
                            f"expected {index:0{self.key_digits}d}: the index does not match the shard files",
                            hint="rewrite the shards with `nstzoo data shard --overwrite`")
        return sample, url

    def _member(self, sample: dict[str, Any], url: str) -> tuple[str, bytes]:
        ext = _image_member(sample)
        if ext is None:
            members = ", ".join(sample["__key__"] + k for k in sample if k.startswith("."))
            raise DataError(f"sample {sample['__key__']!r} in shard {url!r} has no image member ({members})")
        return f"{url}:{sample['__key__']}{ext}", sample[ext].getvalue()

    def read_bytes(self, index: int) -> bytes:
        """The image member's bytes: the source file's bytes, as written."""
        sample, url = self._sample(index)
        return self._member(sample, url)[1]

    def read(self, index: int) -> Tensor:
        """``[3, H, W]`` float32 in ``[0, 1]``.

        Raises:
            DataError: naming the member (``'SHARD.tar:KEY.png'``) when it cannot be decoded, or the
                shard when it cannot be opened; callers skip the image and count it.
        """
        sample, url = self._sample(index)
        member, data = self._member(sample, url)
        return decode_bytes(data, name=repr(member), max_pixels=self.max_pixels)

    def name(self, index: int) -> str:
        """The source file's path as it was sharded (``folder/relative/path``); never raises DataError.

        For shards without nstzoo's ``.json`` members, or that cannot be read, the member or the
        shard and position instead.
        """
        try:
            sample, url = self._sample(index)
        except DataError:
            shard, inner = self._locate(int(index))
            return f"{self.urls[shard]}[{inner}]"
        meta = sample.get(".json")
        if meta is not None:
            try:
                info = json.loads(meta.getvalue())
                return str(Path(info["folder"]) / info["path"])
            except (ValueError, KeyError, TypeError):
                pass  # a damaged .json member: fall back to the member's own name
        ext = _image_member(sample) or ""
        return f"{url}:{sample['__key__']}{ext}"

    def open_shards(self) -> int:
        """Shards open in this process (for tests and diagnostics)."""
        return 0 if self._dataset is None or self._pid != os.getpid() else len(self._dataset.cache)

    def __repr__(self) -> str:
        return f"ShardSource({self.origin!r}, n={len(self)}, shards={len(self.urls)})"


_GLOB_CHARS = re.compile(r"[*?\[{]|::")


def open_source(spec: str | os.PathLike[str], *, max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS,
                max_pixels: int | None = None) -> FolderSource | ShardSource:
    """An image source from what a user typed.

    - a folder holding ``shards.json``, or a ``.json`` file: :class:`ShardSource` (reads the index only);
    - a folder: :class:`FolderSource` over :func:`list_images` (lists every file);
    - a ``.tar`` file, a glob (``shards/*.tar``) or webdataset URL notation (``shard-{000000..000099}.tar``,
      several joined by ``::``): :class:`ShardSource` over those tar files in sorted order per pattern;
      each is opened once to count its samples (per-shard work, no ``shards.json`` needed).

    Raises:
        DataError: nothing matches, naming ``spec``.
    """
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        if (path / INDEX_NAME).is_file():
            return ShardSource(path, max_open_shards=max_open_shards, max_pixels=max_pixels)
        return FolderSource.from_folder(path, max_pixels=max_pixels)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return ShardSource(path, max_open_shards=max_open_shards, max_pixels=max_pixels)
        if path.suffix.lower() == ".tar":
            return ShardSource.from_tar_files([path], max_open_shards=max_open_shards, max_pixels=max_pixels)
        raise DataError(f"{text!r} is neither a folder, a shards.json nor a .tar shard")
    if not _GLOB_CHARS.search(text):
        raise DataError(f"{text!r} does not exist")
    tars: list[str] = []
    for pattern in expand_urls(text):  # braces and "::", as webdataset reads shard lists
        if re.search(r"[*?\[]", pattern):
            matches = sorted(glob.glob(pattern))
        else:
            matches = [pattern] if os.path.isfile(pattern) else []
        tars.extend(m for m in matches if m.lower().endswith(".tar"))
    if not tars:
        raise DataError(f"no .tar shard files match {text!r}")
    return ShardSource.from_tar_files(list(dict.fromkeys(tars)), max_open_shards=max_open_shards,
                                      max_pixels=max_pixels)


# ----------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------


def iter_indices(n: int, rank: int = 0, world_size: int = 1, worker_id: int = 0, num_workers: int = 1) -> range:
    """The indices of ``range(n)`` that one DataLoader worker of one rank streams.

    The ``world_size * num_workers`` parts are contiguous (a worker reads whole runs of a shard, not
    every n-th image of every shard), disjoint, cover ``range(n)`` and differ in size by at most one.
    Part ``rank * num_workers + worker_id`` is ``[n*p // P, n*(p+1) // P)``.
    """
    if n < 0 or world_size < 1 or num_workers < 1:
        raise ValueError(f"need n >= 0, world_size >= 1, num_workers >= 1; got {n}, {world_size}, {num_workers}")
    if not (0 <= rank < world_size and 0 <= worker_id < num_workers):
        raise ValueError(f"rank {rank} of {world_size}, worker {worker_id} of {num_workers} is out of range")
    parts, part = world_size * num_workers, rank * num_workers + worker_id
    return range(n * part // parts, n * (part + 1) // parts)


class SourceStream(torch.utils.data.IterableDataset):
    """Every image of a source once, split over ranks and DataLoader workers (:func:`iter_indices`).

    For passes over a whole source (embedding, index building). Items are
    ``{"index": int, "name": str, "image": Tensor[3,H,W] in [0,1] | None, "error": str | None}``;
    an unreadable image gives ``image=None`` and the error message, for the consumer to count. Use
    ``batch_size=None`` (or a collate that handles ``None``) in the DataLoader.

    Args:
        source: a :class:`FolderSource` or :class:`ShardSource` (or anything with ``len``, ``read``, ``name``).
        rank, world_size: this process's share.
        transform: applied to each decoded image.
    """

    def __init__(self, source: Any, rank: int = 0, world_size: int = 1,
                 transform: Callable[[Tensor], Tensor] | None = None):
        self.source, self.rank, self.world_size, self.transform = source, rank, world_size, transform
        iter_indices(len(source), rank, world_size)  # checks rank and world_size now, not in a worker

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in iter_indices(len(self.source), self.rank, self.world_size, worker, workers):
            try:
                image: Tensor | None = self.source.read(index)
                error = None
            except DataError as err:
                image, error = None, err.message
            if image is not None and self.transform is not None:
                image = self.transform(image)
            yield {"index": index, "name": self.source.name(index), "image": image, "error": error}


class ConcatSource:
    """Several sources as one: index ``i`` runs through the first source, then the next, and so on.

    ``nstzoo train --content A --content shards/`` draws from both as one pool, like one folder would.
    """

    def __init__(self, sources: Sequence[Any]):
        self.sources = [s for s in sources if len(s)]
        self.starts = [0]
        for source in self.sources:
            self.starts.append(self.starts[-1] + len(source))

    def __len__(self) -> int:
        return self.starts[-1]

    def _locate(self, index: int) -> tuple[Any, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        part = bisect.bisect_right(self.starts, index) - 1
        return self.sources[part], index - self.starts[part]

    def name(self, index: int) -> str:
        source, local = self._locate(index)
        return source.name(local)

    def read(self, index: int) -> Tensor:
        source, local = self._locate(index)
        return source.read(local)

    def read_bytes(self, index: int) -> bytes:
        source, local = self._locate(index)
        return source.read_bytes(local)


def open_sources(specs: Sequence[str | os.PathLike[str]], extra_files: Sequence[str | os.PathLike[str]] = (),
                 **kwargs: Any) -> FolderSource | ShardSource | ConcatSource:
    """One source over folders, shard sets and globs (:func:`open_source` each) plus loose ``extra_files``."""
    sources: list[Any] = [open_source(spec, **kwargs) for spec in specs]
    if extra_files:
        sources.append(FolderSource(list(extra_files)))
    sources = [s for s in sources if len(s)]
    return sources[0] if len(sources) == 1 else ConcatSource(sources)
