"""Listing image folders: links followed once, loops and duplicates dropped, every skip counted and reported."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nstzoo.data.decode import max_file_bytes
from nstzoo.data.folder import SKIP_REASONS, ImageList, list_images
from nstzoo.errors import DataError


def image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    return path


def names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def skipped(listing: ImageList, root: Path) -> dict[str, list[str]]:
    return {r: names(p, root) for r, p in listing.summary.skipped.items() if p}


def test_symlink_loops_are_not_followed(tmp_path):
    # The report that started this: two files and a loop were listed as 82 images.
    image(tmp_path / "a.png")
    image(tmp_path / "sub" / "b.png")
    os.symlink("..", tmp_path / "sub" / "up")
    os.symlink(".", tmp_path / "self")
    with pytest.warns(RuntimeWarning) as record:
        listing = list_images(tmp_path)
    assert names(listing, tmp_path) == ["a.png", "sub/b.png"]
    assert skipped(listing, tmp_path) == {"loop": ["self", "sub/up"]}
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and "2 loop ('self', 'sub/up')" in message and "listed 2 images" in message


def test_links_between_links_and_broken_links(tmp_path):
    image(tmp_path / "ok.png")
    os.symlink("l2.png", tmp_path / "l1.png")
    os.symlink("l1.png", tmp_path / "l2.png")
    os.symlink("gone.png", tmp_path / "broken.png")
    os.symlink("nowhere", tmp_path / "dangling-folder")  # not named like an image: ignored silently
    with pytest.warns(RuntimeWarning, match="unreadable"):
        listing = list_images(tmp_path)
    assert names(listing, tmp_path) == ["ok.png"]
    assert skipped(listing, tmp_path) == {"loop": ["l1.png", "l2.png"], "unreadable": ["broken.png"]}


def test_duplicates_keep_the_path_without_links(tmp_path):
    image(tmp_path / "b" / "c" / "x.png")
    image(tmp_path / "real" / "y.png", 1)
    os.symlink("b/c", tmp_path / "a-link")               # sorts first, but is a link
    os.symlink("real", tmp_path / "alias")
    os.symlink("real/y.png", tmp_path / "0-link.png")     # a file link, sorts first
    os.link(tmp_path / "real" / "y.png", tmp_path / "real" / "z-hard.png")  # a hard link: same file
    with pytest.warns(RuntimeWarning, match="duplicate"):
        listing = list_images(tmp_path)
    assert names(listing, tmp_path) == ["b/c/x.png", "real/y.png"]
    assert sorted(skipped(listing, tmp_path)["duplicate"]) == ["0-link.png", "a-link", "alias", "real/z-hard.png"]


def test_links_to_outside_are_followed_once(tmp_path):
    outside = tmp_path / "outside"
    image(outside / "o.png")
    root = tmp_path / "root"
    image(root / "r.png")
    os.symlink(outside, root / "ext1")
    os.symlink(outside, root / "ext2")
    with pytest.warns(RuntimeWarning):
        listing = list_images(root)
    assert names(listing, root) == ["ext1/o.png", "r.png"]
    assert skipped(listing, root) == {"duplicate": ["ext2"]}


def test_unsupported_too_large_unreadable_and_other_files(tmp_path):
    image(tmp_path / "ok.png")
    (tmp_path / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "logo.svg").write_text("<svg/>")
    (tmp_path / "notes.txt").write_text("labels")
    (tmp_path / "meta.json").write_text("{}")
    with open(tmp_path / "huge.jpg", "wb") as fh:  # sparse
        fh.truncate(max_file_bytes(1000) + 1)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.png")
    with pytest.warns(RuntimeWarning) as record:
        listing = list_images(tmp_path, max_pixels=1000)
    assert names(listing, tmp_path) == ["ok.png"]
    found = skipped(listing, tmp_path)
    assert found["unsupported format"] == ["logo.svg", "phone.heic"] and found["too large"] == ["huge.jpg"]
    if hasattr(os, "mkfifo"):
        assert found["unreadable"] == ["pipe.png"]
    assert listing.summary.other_files == 2 and listing.summary.listed == 1
    assert set(listing.summary.as_dict()["skipped"]) <= set(SKIP_REASONS)
    assert len(record) == 1 and "unsupported format" in str(record[0].message)


def test_probe_reads_headers(tmp_path):
    image(tmp_path / "ok.png")
    (tmp_path / "text.jpg").write_text("not a picture")
    (tmp_path / "empty.png").write_bytes(b"")
    big = Image.new("RGB", (40, 40))
    big.save(tmp_path / "big.png")
    plain = list_images(tmp_path, warn=False)
    assert len(plain) == 4 and plain.summary.total_skipped == 0  # no header read: decode-time skips
    with pytest.warns(RuntimeWarning):
        probed = list_images(tmp_path, probe=True, max_pixels=1000)
    assert names(probed, tmp_path) == ["ok.png"]
    assert skipped(probed, tmp_path) == {"unreadable": ["empty.png"], "unsupported format": ["text.jpg"],
                                         "too large": ["big.png"]}


def test_clean_folder_warns_nothing_and_errors_explain(tmp_path):
    image(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        listing = list_images(tmp_path)
    assert isinstance(listing, list) and listing.summary.total_skipped == 0
    empty = tmp_path / "only-heic"
    empty.mkdir()
    (empty / "x.heic").write_bytes(b"\x00")
    with pytest.raises(DataError, match=r"no images in .*skipped 1 unsupported format \('x.heic'\)"):
        list_images(empty)
    with pytest.raises(DataError, match="is not a folder"):
        list_images(tmp_path / "a.png")


def test_not_recursive_ignores_folders(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "sub" / "b.png")
    os.symlink(".", tmp_path / "loop")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert names(list_images(tmp_path, recursive=False), tmp_path) == ["a.png"]
