"""Safe decoding: damaged, hostile and odd image files are refused by name, never crash or bloat the process."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nstzoo.data import decode
from nstzoo.data.decode import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    IMAGE_EXTENSIONS,
    CorruptImageError,
    ImageTooLargeError,
    UnreadableImageError,
    UnsupportedImageError,
    decode_bytes,
    pixel_limit,
    probe_bytes,
    probe_file,
)
from nstzoo.data.folder import list_images, load_image
from nstzoo.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]


def rgb(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encoded(fmt: str, array: np.ndarray | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb() if array is None else array).save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk_offset(data: bytes, kind: bytes) -> int:
    """Offset of a chunk's length field."""
    return data.index(kind) - 4


def flipped_idat_png() -> bytes:
    """One flipped bit in the image data: the file that made torchvision's libpng abort the process."""
    data = bytearray(encoded("PNG"))
    at = png_chunk_offset(data, b"IDAT")
    length = int.from_bytes(data[at:at + 4], "big")
    data[at + 8 + length // 2] ^= 0x10
    return bytes(data)


def short_idat_png() -> bytes:
    """An IDAT chunk whose length field claims less than it holds."""
    data = bytearray(encoded("PNG"))
    at = png_chunk_offset(data, b"IDAT")
    length = int.from_bytes(data[at:at + 4], "big")
    data[at:at + 4] = (length // 2).to_bytes(4, "big")
    return bytes(data)


def forged_png(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR claims ``width x height`` (with a correct CRC, so it parses)."""
    data = bytearray(encoded("PNG", np.zeros((8, 8, 3), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def forged_jpeg(width: int, height: int) -> bytes:
    data = bytearray(encoded("JPEG", np.zeros((8, 8, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def real_png_bomb(side: int) -> bytes:
    """A genuine ``side x side`` black PNG: tiny on disk, ``3 * side**2`` bytes once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * side)  # filter byte + RGB
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


# A child process decodes the files: a decoder that aborts (SIGSEGV) must fail one test, not kill pytest.
CHILD = r"""
import json, resource, sys
from nstzoo.data.folder import load_image
from nstzoo.errors import DataError
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    print(json.dumps({"path": path, "start": True}), flush=True)
    try:
        image = load_image(path)
        result = {"ok": list(image.shape)}
    except DataError as err:
        result = {"error": type(err).__name__, "message": str(err)}
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024
    print(json.dumps({"path": path, "grown_mb": grown, **result}), flush=True)
"""


def decode_in_child(paths: list[Path], env: dict[str, str] | None = None) -> tuple[int, dict[str, dict], str]:
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    results = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if not record.get("start"):
            results[Path(record["path"]).name] = record
    return proc.returncode, results, proc.stderr


def test_damaged_and_hostile_pngs_are_refused_without_crash_or_memory_blowup(tmp_path):
    files = {"flip.png": flipped_idat_png(), "short.png": short_idat_png(), "forged.png": forged_png(30000, 30000),
             "forged.jpg": forged_jpeg(60000, 60000), "fine.png": encoded("PNG")}
    files["bomb.png"] = real_png_bomb(8200)  # 67.24 Mpx, just over the default limit of 2**26
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert len(files["bomb.png"]) < 1_000_000  # 67 megapixels (200 MB as RGB) in well under a megabyte
    code, results, stderr = decode_in_child([tmp_path / n for n in files])
    assert code == 0, f"the decoding process died (exit {code}): {stderr[-2000:]}"
    assert results["fine.png"]["ok"] == [3, 24, 32]
    for name in ("flip.png", "short.png"):
        assert results[name]["error"] == "CorruptImageError", results[name]
        assert f"'{tmp_path / name}'" in results[name]["message"] and "BytesIO" not in results[name]["message"]
    for name, claimed in (("forged.png", "900,000,000"), ("forged.jpg", "3,600,000,000"), ("bomb.png", "67,240,000")):
        assert results[name]["error"] == "ImageTooLargeError", results[name]
        assert name in results[name]["message"] and claimed in results[name]["message"]
        assert f"{DEFAULT_MAX_PIXELS:,}" in results[name]["message"] and "NSTZOO_MAX_PIXELS" in results[name]["message"]
        assert results[name]["grown_mb"] < 100, results[name]  # refused from the header: nothing allocated
    assert "8200 x 8200" in results["bomb.png"]["message"]


def test_pixel_limit_argument_env_and_validation(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(encoded("PNG"))  # 24 x 32 = 768 pixels
    assert pixel_limit() == DEFAULT_MAX_PIXELS == 1 << 26
    monkeypatch.setenv("NSTZOO_MAX_PIXELS", "700")
    with pytest.raises(ImageTooLargeError, match=r"claims 32 x 24 = 768 pixels, over the limit of 700") as err:
        load_image(path)
    assert str(path) in str(err.value)
    assert load_image(path, max_pixels=768).shape == (3, 24, 32)  # the argument wins over the environment
    with pytest.raises(ImageTooLargeError):
        decode_bytes(path.read_bytes(), "'x'", max_pixels=767)
    for bad in ("lots", "0", "-5"):
        monkeypatch.setenv("NSTZOO_MAX_PIXELS", bad)
        with pytest.raises(ConfigError, match="NSTZOO_MAX_PIXELS|positive"):
            load_image(path)
    monkeypatch.setenv("NSTZOO_MAX_PIXELS", "100_000_000")
    assert pixel_limit() == 100_000_000
    with pytest.raises(ConfigError):
        pixel_limit(0)


def test_raising_the_limit_above_pillows_own_guard_is_honoured(monkeypatch):
    # Pillow refuses > 2 x 89.5 Mpx by itself; a user who raised NSTZOO_MAX_PIXELS gets the header through.
    data = forged_png(20000, 10000)  # 200 Mpx claimed; only the header is read
    assert probe_bytes(data, "'big'", max_pixels=300_000_000).pixels == 200_000_000
    with pytest.raises(ImageTooLargeError, match="200,000,000 pixels, over the limit of 100,000,000"):
        probe_bytes(data, "'big'", max_pixels=100_000_000)


def test_oversized_file_is_refused_from_its_size_without_reading(tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as fh:  # sparse: nothing is written to disk
        fh.truncate(decode.max_file_bytes(1000) + 1)
    with pytest.raises(ImageTooLargeError, match="bytes") as err:
        load_image(path, max_pixels=1000)
    assert "huge.png" in str(err.value)


@pytest.mark.parametrize("content, expected", [
    (b"hello, I am a text file\n", "not an image nstzoo reads"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "is a HEIC file"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "is a SVG file"),
    (b"P6\n2 2\n255\n" + bytes(12), "not an image nstzoo reads"),  # PPM: Pillow reads it, nstzoo does not
    (b"\x89PNG\r\n\x1a\n" + bytes(30), "damaged PNG header"),
], ids=["text", "heic", "svg", "ppm", "png-garbage"])
def test_not_an_image_says_what_it_is_and_names_the_file(tmp_path, content, expected):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_image(path)
    message = str(err.value)
    assert expected in message and repr(str(path)) in message
    assert "BytesIO" not in message and "0x" not in message


def test_error_classes_by_reason(tmp_path):
    assert isinstance(pytest.raises(UnreadableImageError, load_image, tmp_path / "missing.png").value, DataError)
    with pytest.raises(UnreadableImageError, match="folder"):
        load_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UnsupportedImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(CorruptImageError):
        decode_bytes(encoded("JPEG")[:200], "'cut.jpg'")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_named_like_an_image_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")  # reading it would block forever
    with pytest.raises(UnreadableImageError, match="not a regular file"):
        load_image(tmp_path / "pipe.png")
    with pytest.raises(UnreadableImageError):
        probe_file(tmp_path / "pipe.png")


def test_every_format_stylize_reads_is_listed_and_read_in_folders(tmp_path):
    # stylize reads through load_image; folders list by suffix: both come from the one FORMATS table.
    # Smooth content, so that lossy JPEG stays close to the original.
    yy, xx = np.meshgrid(np.linspace(0, 1, 16), np.linspace(0, 1, 20), indexing="ij")
    array = (np.stack([yy, xx, (yy + xx) / 2], axis=-1) * 255).astype(np.uint8)
    extra = {"TIFF": {"compression": "tiff_lzw"}, "WEBP": {"lossless": True}, "JPEG": {"quality": 95}}
    written = []
    for fmt, suffixes in FORMATS.items():
        for suffix in suffixes:
            path = tmp_path / f"img_{suffix[1:]}{suffix}"
            Image.fromarray(array).save(path, fmt, **extra.get(fmt, {}))
            written.append(path)
    assert {p.suffix for p in written} == set(IMAGE_EXTENSIONS)
    listed = list_images(tmp_path)
    assert sorted(listed) == sorted(written) and listed.summary.total_skipped == 0
    reference = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    for path in listed:
        image = load_image(path)
        assert image.shape == (3, 16, 20), path.name
        # Lossless formats exactly; JPEG and GIF (a 256-colour palette) approximately.
        tolerance = 0.03 if path.suffix in FORMATS["JPEG"] + FORMATS["GIF"] else 1e-6
        assert (image - reference).abs().mean() <= tolerance, path.name


def test_gif_and_tiff_first_frame_and_float_tiff_nan(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    first = load_image(tmp_path / "anim.gif")
    assert abs(float(first.mean()) - 40 / 255) < 0.02
    values = np.full((6, 6), 0.5, np.float32)
    values[0, 0], values[0, 1], values[0, 2] = np.nan, np.inf, 7.0
    Image.fromarray(values, "F").save(tmp_path / "float.tif")
    image = load_image(tmp_path / "float.tif")
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert float(image[0, 1, 1]) == pytest.approx(0.5)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 30, 3), np.uint8)
    array[:, :5] = 255  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(array).save(tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    image = load_image(tmp_path / "rot.jpg")
    assert image.shape == (3, 30, 10)
    assert image[:, :5].mean() > 0.9 and image[:, -5:].mean() < 0.1  # the band is now at the top


def test_dataloader_workers_survive_corrupt_pngs(tmp_path):
    # A flipped bit used to kill the worker process (SIGSEGV) and with it the training run.
    from nstzoo.data import ImageFolder, ResizeCrop, collate_skip

    (tmp_path / "flip.png").write_bytes(flipped_idat_png())
    (tmp_path / "short.png").write_bytes(short_idat_png())
    (tmp_path / "good.png").write_bytes(encoded("PNG"))
    loader = torch.utils.data.DataLoader(ImageFolder(tmp_path, transform=ResizeCrop(8)), batch_size=2, num_workers=2,
                                         collate_fn=collate_skip)
    batches = list(loader)  # the skip warnings are issued (and printed) in the worker processes
    assert sum(b["skipped"] for b in batches) == 2
    assert [Path(p).name for b in batches for p in b["path"]] == ["good.png"]


def test_jpeg_with_absurd_scan_count_is_refused():
    data = encoded("JPEG", rgb(16, 16), progressive=True)
    assert 2 <= data.count(b"\xff\xda") <= decode.MAX_JPEG_SCANS  # a real progressive file passes
    assert decode_bytes(data, "'p.jpg'").shape == (3, 16, 16)
    # Extra start-of-scan markers (here inside a comment segment, which only a count sees).
    payload = b"\xff\xda" * (decode.MAX_JPEG_SCANS + 1)
    forged = data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    with pytest.raises(CorruptImageError, match=r"'many.jpg': \d+ JPEG scans"):
        decode_bytes(forged, "'many.jpg'")
