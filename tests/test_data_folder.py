"""Image folders: every common file flavour decodes to [3,H,W] in [0,1]; broken files are skipped."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nstzoo.data import (
    IMAGE_EXTENSIONS,
    ImageFolder,
    ResizeCrop,
    center_crop,
    collate_skip,
    list_images,
    load_image,
    random_crop,
    resize_crop,
    resize_shorter,
    scan,
)
from nstzoo.errors import DataError

H, W = 12, 20


def _rgb_array(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    """Seven good images of different flavours, two broken ones, and a text file."""
    rgb = _rgb_array()
    Image.fromarray(rgb).save(tmp_path / "good.png")
    Image.fromarray(rgb).save(tmp_path / "photo.JPG", quality=95)  # upper-case suffix
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    rgba = np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], axis=-1)
    rgba[0, 0, 3] = 0  # fully transparent pixel -> white after compositing
    rgba[0, 1, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    deep = np.full((H, W), 16384, np.uint16)  # 0.25 of full scale in 16 bits
    deep[0, 0] = 65535
    Image.fromarray(deep).save(tmp_path / "deep16.png")
    sub = tmp_path / "sub"
    sub.mkdir()
    Image.fromarray(rgb).save(sub / "lossless.webp", lossless=True)
    Image.fromarray(rgb).save(sub / "bitmap.bmp")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    (tmp_path / "broken.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")  # hidden files are not listed
    return tmp_path


GOOD = {"good.png", "photo.JPG", "gray.png", "alpha.png", "deep16.png", "lossless.webp", "bitmap.bmp"}
BAD = {"broken.jpg", "empty.png"}


def test_list_images(mixed_folder):
    paths = list_images(mixed_folder)
    assert {p.name for p in paths} == GOOD | BAD
    assert paths == sorted(paths, key=lambda p: p.relative_to(mixed_folder).as_posix())
    assert {p.name for p in list_images(mixed_folder, recursive=False)} == (GOOD | BAD) - {"lossless.webp", "bitmap.bmp"}
    assert ".bmp" in IMAGE_EXTENSIONS and ".webp" in IMAGE_EXTENSIONS


def test_list_images_errors(tmp_path):
    with pytest.raises(DataError, match="no images") as err:
        list_images(tmp_path)
    assert str(tmp_path) in str(err.value)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "missing")


def test_load_image_flavours(mixed_folder):
    rgb = torch.from_numpy(_rgb_array()).permute(2, 0, 1).float() / 255
    for path in list_images(mixed_folder):
        if path.name in BAD:
            continue
        img = load_image(path)
        assert img.shape == (3, H, W) and img.dtype == torch.float32, path.name
        assert img.min() >= 0 and img.max() <= 1, path.name
    # Lossless formats decode exactly, whatever the decoder (BMP goes through Pillow).
    for name in ("good.png", "sub/lossless.webp", "sub/bitmap.bmp"):
        assert torch.allclose(load_image(mixed_folder / name), rgb, atol=1e-6), name
    # JPEG: same picture as Pillow decodes (decoders may round differently).
    with Image.open(mixed_folder / "photo.JPG") as im:
        pil = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    assert (load_image(mixed_folder / "photo.JPG") - pil).abs().mean() < 0.01
    gray = load_image(mixed_folder / "gray.png")
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])
    assert torch.allclose(gray[0], rgb[0], atol=1e-6)
    alpha = load_image(mixed_folder / "alpha.png")
    assert torch.equal(alpha[:, 0, 0], torch.ones(3))  # transparent -> white background
    assert torch.allclose(alpha[:, 0, 1], rgb[:, 0, 1] * 128 / 255 + (1 - 128 / 255), atol=1e-6)
    assert torch.allclose(alpha[:, 1:], rgb[:, 1:], atol=1e-6)
    deep = load_image(mixed_folder / "deep16.png")
    assert torch.allclose(deep[:, 1:, 1:], torch.full_like(deep[:, 1:, 1:], 16384 / 65535), atol=1e-6)
    assert torch.equal(deep[:, 0, 0], torch.ones(3))


@pytest.mark.parametrize(
    "mode, save_kw",
    [("P", {}), ("P", {"transparency": 3}), ("P", {"bits": 2}), ("1", {}), ("LA", {})],
    ids=["palette", "palette+tRNS", "palette-2bit", "1bit", "gray+alpha"],
)
def test_load_image_png_variants_match_pillow(tmp_path, mode, save_kw):
    # torchvision's RGB_ALPHA mode mangles palette PNGs without transparency; these pin
    # the decoder choice against Pillow's reading of the same file, alpha over white.
    im = Image.fromarray(_rgb_array(1))
    im = im.quantize(colors=4 if save_kw.get("bits") == 2 else 16) if mode == "P" else im.convert(mode)
    im.save(tmp_path / "x.png", **save_kw)
    with Image.open(tmp_path / "x.png") as ref:
        rgba = torch.from_numpy(np.asarray(ref.convert("RGBA")).copy()).permute(2, 0, 1).float() / 255
    expected = rgba[:3] * rgba[3:] + (1 - rgba[3:])
    assert torch.allclose(load_image(tmp_path / "x.png"), expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BAD) + ["missing.png"])
def test_load_image_errors_name_the_file(mixed_folder, name):
    with pytest.raises(DataError) as err:
        load_image(mixed_folder / name)
    assert name in str(err.value)


def test_load_image_not_an_image(tmp_path):
    (tmp_path / "fake.png").write_text("hello, I am text")
    with pytest.raises(DataError, match="fake.png"):
        load_image(tmp_path / "fake.png")


def test_image_folder_skips_and_counts_broken_files(mixed_folder):
    ds = ImageFolder(mixed_folder, transform=ResizeCrop(8))
    assert len(ds) == len(GOOD | BAD)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_skip)
    with pytest.warns(RuntimeWarning) as record:
        batches = list(loader)
    assert sum(b["skipped"] for b in batches) == 2
    warned = " ".join(str(w.message) for w in record)
    assert "broken.jpg" in warned and "empty.png" in warned
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (len(GOOD), 3, 8, 8)
    assert images.min() >= 0 and images.max() <= 1
    names = [Path(p).name for b in batches for p in b["path"]]
    assert set(names) == GOOD
    indices = torch.cat([b["index"] for b in batches])
    assert indices.dtype == torch.long
    assert [ds.paths[int(i)].name for i in indices] == names


def test_image_folder_item_and_pickle(mixed_folder):
    ds = ImageFolder([mixed_folder / "good.png", str(mixed_folder / "empty.png")])
    item = ds[0]
    assert set(item) == {"image", "index", "path"} and item["index"] == 0
    bad = next(i for i, p in enumerate(ds.paths) if p.name == "empty.png")
    with pytest.warns(RuntimeWarning, match="empty.png"):
        assert ds[bad] is None
    clone = pickle.loads(pickle.dumps(ImageFolder(mixed_folder, transform=ResizeCrop(8, random=True, seed=3))))
    assert len(clone) == len(GOOD | BAD) and clone[0]["image"].shape == (3, 8, 8)
    with pytest.raises(DataError):
        ImageFolder([])


def test_collate_skip_edge_cases():
    out = collate_skip([None, None])
    assert out["skipped"] == 2 and out["image"].shape[0] == 0 and out["path"] == []
    items = [{"image": torch.zeros(3, 4, 4), "index": 0, "path": "a"}, {"image": torch.zeros(3, 5, 4), "index": 1, "path": "b"}]
    with pytest.raises(DataError, match="differ in size"):
        collate_skip(items)


def test_scan(mixed_folder):
    seen = []
    ok, bad = scan(list_images(mixed_folder), progress=seen.append)
    assert {p.name for p in ok} == GOOD
    assert {p.name for p, _ in bad} == BAD
    assert all(reason for _, reason in bad)
    assert seen == list(range(1, len(GOOD | BAD) + 1))


# ----------------------------------------------------------------------------- transforms


def test_resize_shorter():
    img = torch.rand(3, 20, 30)
    assert resize_shorter(img, 10).shape == (3, 10, 15)
    assert resize_shorter(img.transpose(1, 2), 10).shape == (3, 15, 10)
    assert resize_shorter(img[None].expand(2, -1, -1, -1), 40).shape == (2, 3, 40, 60)
    out = resize_shorter(img, 7)
    assert out.min() >= 0 and out.max() <= 1  # no overshoot
    # Antialiasing: downscaling a one-pixel checkerboard gives flat grey, not aliased stripes.
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2).float().expand(3, -1, -1)
    assert torch.allclose(resize_shorter(checker, 8), torch.full((3, 8, 8), 0.5), atol=0.02)


def test_crops():
    img = torch.rand(2, 3, 10, 16)
    c = center_crop(img, 8)
    assert torch.equal(c, img[..., 1:9, 4:12])
    small = center_crop(torch.rand(3, 4, 6), 8)  # smaller than the crop: upscaled first
    assert small.shape == (3, 8, 8)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(random_crop(img, 8, g1), random_crop(img, 8, g2))
    crops = {tuple(random_crop(img[0], 8, g1)[0, 0, :2].tolist()) for _ in range(20)}
    assert len(crops) > 1
    assert resize_crop(torch.rand(3, 50, 70), 16, random=False).shape == (3, 16, 16)
    assert resize_crop(torch.rand(3, 50, 70), 16, random=True, generator=g1).shape == (3, 16, 16)
    with pytest.raises(DataError):
        center_crop(torch.zeros(3, 8, 8, dtype=torch.uint8), 4)
    with pytest.raises(DataError):
        center_crop(torch.zeros(3, 8, 8), 0)


def test_resize_crop_transform_is_seeded_and_picklable():
    img = torch.rand(3, 32, 64)
    a, b = ResizeCrop(16, random=True, seed=1), ResizeCrop(16, random=True, seed=1)
    seq_a = [a(img) for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(seq_a, [b(img) for _ in range(5)]))
    assert len({int((x[0, 0, 0] * 1e6).round()) for x in seq_a}) > 1
    clone = pickle.loads(pickle.dumps(ResizeCrop(16, random=True, seed=1)))
    assert torch.equal(clone(img), seq_a[0])
    assert torch.equal(ResizeCrop(16)(img), center_crop(resize_shorter(img, 16), 16))


def test_image_folder_in_worker_processes(mixed_folder):
    # Items cross a process boundary: the dataset, its transform and the collate function
    # must pickle, and skipped files are still counted.
    ds = ImageFolder(mixed_folder, transform=ResizeCrop(8, random=True, seed=0))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_skip)
    batches = list(loader)
    assert sum(b["skipped"] for b in batches) == 2
    assert sum(len(b["path"]) for b in batches) == len(GOOD)
