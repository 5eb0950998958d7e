"""Safe image decoding: no input file can crash the process, hang it, or exhaust its memory.

Every image nstzoo reads goes through :func:`decode_bytes` (or :func:`read_image`, which adds the
file checks). It returns a float32 tensor ``[3, H, W]`` in ``[0, 1]`` or raises a
:class:`~nstzoo.errors.DataError` subclass that names the file and says what is wrong.

Why not simply ``torchvision.io.decode_image``: torchvision 0.29's libpng build aborts the whole
process (SIGSEGV, exit 139, after printing ``libpng error: IDAT: incorrect data check``) on any
PNG that libpng rejects. One flipped bit in a PNG's image data is enough, and a DataLoader worker
or a CLI command dies with it. Its JPEG and WebP decoders survived the same fuzzing
(tests/test_fuzz.py). Pillow raises ordinary exceptions on every corrupt file we tried. So:

1. **The header first.** Pillow parses the header only (no pixel data) and tells the format and
   the claimed size. Only :data:`FORMATS` are accepted — Pillow's many other plugins (EPS runs
   Ghostscript, for one) are never tried. An image whose header claims more than
   :func:`pixel_limit` pixels is refused before anything is allocated: a 2.6 MB PNG can claim
   30000 x 30000 pixels and would otherwise need ~11 GB as float32.
2. **Then the pixels.** JPEGs go to torchvision's libjpeg-turbo decoder (about 25 % faster than
   Pillow's, see bench/decode.py; Pillow gets anything it rejects), unless they hold more than
   :data:`MAX_JPEG_SCANS` scans (a progressive-JPEG hang). Every other format is decoded by
   Pillow, which raises instead of aborting. PNG decoding costs about 15 % more than with libpng.

Peak memory while decoding is about 20 bytes per pixel (Pillow's 8-bit image, its bytes, the
float32 result; measured 19 for an 8000 x 8000 RGB PNG, more with alpha), so the default limit of
2**26 pixels (64 Mi, e.g. 8192 x 8192) keeps one image around 1.3 GB. ``NSTZOO_MAX_PIXELS`` or the
``max_pixels`` argument changes it.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "MAX_JPEG_SCANS",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "UNSUPPORTED_EXTENSIONS",
    "ImageHeader",
    "UnreadableImageError",
    "UnsupportedImageError",
    "ImageTooLargeError",
    "CorruptImageError",
    "pixel_limit",
    "max_file_bytes",
    "probe_bytes",
    "probe_file",
    "decode_bytes",
    "read_image",
]

#: Pixel limit (width x height) when neither the argument nor the environment sets one.
DEFAULT_MAX_PIXELS: int = 1 << 26
#: Environment variable that overrides :data:`DEFAULT_MAX_PIXELS` (a positive integer).
MAX_PIXELS_ENV = "NSTZOO_MAX_PIXELS"

#: The formats nstzoo reads (Pillow's format names) and the file suffixes that mark them.
FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "BMP": (".bmp",),
    "GIF": (".gif",),
    "TIFF": (".tif", ".tiff"),
}
#: Every suffix of :data:`FORMATS` (lower case): the files an image folder lists.
IMAGE_EXTENSIONS: tuple[str, ...] = tuple(s for suffixes in FORMATS.values() for s in suffixes)
#: Suffixes of image formats nstzoo does not read, by name: a folder reports them as skipped.
UNSUPPORTED_EXTENSIONS: dict[str, str] = {
    ".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".jxl": "JPEG XL", ".jp2": "JPEG 2000",
    ".j2k": "JPEG 2000", ".psd": "Photoshop", ".svg": "SVG", ".ico": "ICO", ".tga": "TGA", ".exr": "OpenEXR",
    ".hdr": "Radiance HDR", ".ppm": "PPM", ".pgm": "PGM", ".pbm": "PBM", ".pnm": "PNM", ".xcf": "GIMP",
    ".dng": "raw camera", ".cr2": "raw camera", ".nef": "raw camera", ".arw": "raw camera", ".raw": "raw camera",
    ".eps": "EPS", ".pdf": "PDF",
}
_TOO_LARGE_HINT = f"downscale it, or raise the limit with {MAX_PIXELS_ENV}=N (decoding needs about 20 bytes per pixel)"
_READABLE = ", ".join("WebP" if f == "WEBP" else f for f in FORMATS)

# Progressive JPEGs are decoded scan by scan, and nothing in the format bounds the number of scans:
# a small file with thousands of them keeps libjpeg busy for minutes (libjpeg-turbo's own fuzzers
# cap it at 500). Encoders write about 10; refuse more than this.
MAX_JPEG_SCANS = 100

# A legitimate image file is never much larger than its pixels stored raw: 8 bytes per pixel
# (16-bit RGBA, uncompressed TIFF/BMP) plus room for metadata (ICC profiles, EXIF, thumbnails).
_BYTES_PER_PIXEL_ON_DISK = 8
_METADATA_BYTES = 64 << 20

# Leading bytes of formats people put in image folders that nstzoo does not read, so that the
# error says "this is a HEIC file" rather than "cannot identify".
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftypheic", "HEIC"), (4, b"ftypheix", "HEIC"), (4, b"ftypmif1", "HEIF"), (4, b"ftypavif", "AVIF"),
    (0, b"\xff\x0a", "JPEG XL"), (4, b"JXL ", "JPEG XL"), (4, b"jP  ", "JPEG 2000"), (0, b"8BPS", "Photoshop"),
    (0, b"%PDF", "PDF"), (0, b"%!PS", "PostScript"), (0, b"<svg", "SVG"), (0, b"<?xml", "XML/SVG"),
    (0, b"\x00\x00\x01\x00", "ICO"), (0, b"v/1\x01", "OpenEXR"), (0, b"#?RADIANCE", "Radiance HDR"),
    (0, b"PK\x03\x04", "ZIP archive"), (0, b"\x1f\x8b", "gzip archive"), (0, b"<!DOCTYPE", "HTML page"),
    (0, b"<html", "HTML page"),
)


class UnreadableImageError(DataError):
    """The file cannot be read at all: missing, a folder, a device or pipe, no permission."""


class UnsupportedImageError(DataError):
    """The bytes are not an image in one of :data:`FORMATS` (another format, text, nothing)."""


class ImageTooLargeError(DataError):
    """The header claims more pixels than the limit, or the file is larger than any such image."""


class CorruptImageError(DataError):
    """A supported format whose data is damaged: truncated, bad checksum, invalid stream."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header claims, read without decoding any pixel."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def pixel_limit(limit: int | None = None) -> int:
    """The pixel limit in force: ``limit`` if given, else ``$NSTZOO_MAX_PIXELS``, else the default.

    Raises:
        ConfigError: the value is not a positive integer.
    """
    if limit is not None:
        value, source = limit, "max_pixels"
    elif os.environ.get(MAX_PIXELS_ENV, "").strip():
        raw = os.environ[MAX_PIXELS_ENV].strip().replace("_", "")
        try:
            value, source = int(raw), MAX_PIXELS_ENV
        except ValueError:
            raise ConfigError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r} is not a whole number of pixels",
                              hint=f"e.g. {MAX_PIXELS_ENV}={DEFAULT_MAX_PIXELS * 2}") from None
    else:
        return DEFAULT_MAX_PIXELS
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{source} must be a positive number of pixels, got {value!r}")
    return value


def max_file_bytes(max_pixels: int | None = None) -> int:
    """The largest image file read into memory, derived from the pixel limit."""
    return _BYTES_PER_PIXEL_ON_DISK * pixel_limit(max_pixels) + _METADATA_BYTES


def _sniff(data: bytes) -> str | None:
    """The name of a known non-readable format from the leading bytes, or None."""
    for offset, magic, label in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return label
    return None


def _unsupported(data: bytes, name: str) -> DataError:
    """The error for bytes Pillow could not identify as one of :data:`FORMATS`."""
    fmt = _guess_format(data)
    if fmt != "image":  # the signature of a format we read, but Pillow rejected the header
        return CorruptImageError(f"cannot decode image {name}: damaged {fmt} header")
    label = _sniff(data[:64]) or _sniff(data.lstrip()[:64])
    if label is not None:
        return UnsupportedImageError(f"{name} is a {label} file, which nstzoo does not read (it reads {_READABLE})",
                                     hint="convert it to PNG or JPEG")
    head = data[:16]
    return UnsupportedImageError(f"{name} is not an image nstzoo reads ({_READABLE}): it starts with {head!r}")


def _reason(err: BaseException) -> str:
    """The useful sentence of a decoder's exception (no object reprs, no C++ source locations)."""
    text = str(err).strip()
    reason = text.splitlines()[-1] if text else type(err).__name__
    if ".cpp:" in reason:  # torchvision: "decode_jpeg, /path/decode_jpeg.cpp:123, the sentence"
        reason = reason.rsplit(", ", 1)[-1]
    return reason.replace("<_io.BytesIO object", "<bytes").strip()


def _open(fp: BinaryIO, head: bytes, name: str, limit: int):  # -> PIL.Image.Image
    """Open ``fp`` with Pillow (header only); enforce the format list and the pixel limit.

    ``head`` is the file's first bytes, to name the format of a file Pillow does not identify.
    """
    from PIL import Image, UnidentifiedImageError

    # Pillow has its own bomb guard (a warning above MAX_IMAGE_PIXELS, an error above twice that).
    # Ours is the one in force, so Pillow's must not be stricter: raise it when the user raised ours.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=list(FORMATS))
    except UnidentifiedImageError:
        raise _unsupported(head, name) from None
    except Image.DecompressionBombError as err:
        # Pillow's guard fired first (beyond twice its own limit, which is above ours): same refusal.
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        what = f"its header claims {int(claimed.group(1)):,} pixels" if claimed else _reason(err)
        raise ImageTooLargeError(f"{name} is too large: {what}, over the limit of {limit:,}",
                                 hint=_TOO_LARGE_HINT) from None
    except Exception as err:  # noqa: BLE001 - a damaged header raises anything from SyntaxError to struct.error
        raise CorruptImageError(f"cannot decode image {name}: damaged {_guess_format(head)} header ({_reason(err)})") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        im.close()
        raise CorruptImageError(f"cannot decode image {name}: its header claims a size of {width} x {height}")
    if width * height > limit:
        im.close()
        raise ImageTooLargeError(
            f"{name} is too large: its header claims {width} x {height} = {width * height:,} pixels, "
            f"over the limit of {limit:,}",
            hint=_TOO_LARGE_HINT)
    return im


def _guess_format(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:3] == b"GIF":
        return "GIF"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:2] == b"BM":
        return "BMP"
    return "image"


def probe_bytes(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> ImageHeader:
    """Read an encoded image's header (format and size) and check it against the limits.

    Args:
        data: the file's bytes (the header is enough; nothing is decoded).
        name: how to call the image in an error message.
        max_pixels: pixel limit (default: :func:`pixel_limit`).

    Raises:
        UnsupportedImageError, ImageTooLargeError, CorruptImageError: naming ``name``.
    """
    if not data:
        raise UnsupportedImageError(f"cannot read image {name}: the file is empty")
    with _open(io.BytesIO(data), data[:64], name, pixel_limit(max_pixels)) as im:
        return ImageHeader(im.format or "?", *im.size)


def probe_file(path: str | os.PathLike[str], max_pixels: int | None = None) -> ImageHeader:
    """:func:`probe_bytes` for a file, reading only as much of it as the header takes.

    Raises:
        UnreadableImageError: see :func:`read_image`; and the errors of :func:`probe_bytes`.
    """
    path = Path(path)
    name, limit = repr(str(path)), pixel_limit(max_pixels)
    _check_file(path, name, limit)
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if not head:
                raise UnsupportedImageError(f"cannot read image {name}: the file is empty")
            fh.seek(0)
            with _open(fh, head, name, limit) as im:
                return ImageHeader(im.format or "?", *im.size)
    except OSError as err:
        raise UnreadableImageError(f"cannot read image {name}: {(err.strerror or str(err)).lower()}") from None


def _to_float(pixels: Tensor, scale: float) -> Tensor:
    """``[H,W,C]`` or ``[H,W]`` integers -> contiguous ``[3,H,W]`` float32 divided by ``scale``."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    out = torch.empty((pixels.shape[2], pixels.shape[0], pixels.shape[1]), dtype=torch.float32)
    out.copy_(pixels.permute(2, 0, 1)).div_(scale)
    return out.expand(3, -1, -1).contiguous() if out.shape[0] == 1 else out


def _pil_to_tensor(im) -> Tensor:  # im: PIL.Image.Image, already loaded
    """Any Pillow mode -> ``[3,H,W]`` float32 in [0,1]; alpha composited over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: keep the precision, scale like a 16-bit PNG.
        arr = np.asarray(im, dtype=np.float32) / 65535.0
        return torch.from_numpy(np.clip(arr, 0.0, 1.0)).expand(3, -1, -1).contiguous()
    if im.mode == "F":
        # Float TIFFs: taken as [0, 1]; NaN and infinities must not leak into a model.
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return torch.from_numpy(np.clip(arr, 0.0, 1.0)).expand(3, -1, -1).contiguous()
    has_alpha = "A" in im.mode or "a" in im.mode or "transparency" in im.info
    if has_alpha:
        # Composite over white, so a transparent cut-out looks as it does in a viewer rather than
        # showing whatever colour hides under alpha = 0.
        rgba = _to_float(_pixels(im, "RGBA"), 255.0)
        color, alpha = rgba[:3], rgba[3:]
        return color.mul_(alpha).add_(1.0 - alpha)
    return _to_float(_pixels(im, "L" if im.mode in ("L", "1") else "RGB"), 255.0)


def _pixels(im, mode: str) -> Tensor:
    """The image's 8-bit pixels in ``mode`` as a read-only ``[H,W(,C)]`` tensor, with no copy to spare."""
    if im.mode != mode:  # convert() copies even when the mode is already right
        im = im.convert(mode)
    with warnings.catch_warnings():
        # np.asarray shares Pillow's bytes (read-only); torch warns about that, but the tensor is
        # only read (by _to_float) and never written.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(im))


def _decode_pil(im, name: str) -> Tensor:
    from PIL import ImageOps

    # Pillow decodes lazily; load() is where damaged data raises (truncation included, since
    # ImageFile.LOAD_TRUNCATED_IMAGES stays False). Animated GIF/WebP/TIFF: the first frame.
    im.load()
    try:
        # exif_transpose copies the image even when there is nothing to turn: ask first.
        if im.getexif().get(0x0112, 1) in range(2, 9):
            im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - damaged EXIF: the pixels are fine, keep them as stored
        pass
    return _pil_to_tensor(im)


def _decode_jpeg_torchvision(data: bytes) -> Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    # Mode RGB also converts CMYK/YCCK and grayscale JPEGs; EXIF orientation applied.
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    img = decode_jpeg(buf, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    return img.to(torch.float32).div_(255.0)


def decode_bytes(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> Tensor:
    """Decode an encoded image held in memory.

    Grayscale is repeated to three channels; alpha (RGBA, LA, palette transparency) is composited
    over white; 16-bit grayscale is scaled by 1/65535 (16-bit colour is read at 8 bits); JPEG EXIF
    orientation is applied; animated GIF/WebP and multi-page TIFF give their first frame.

    Args:
        data: the file's bytes.
        name: how to call the image in an error message (e.g. the quoted path).
        max_pixels: pixel limit (default: :func:`pixel_limit`).

    Returns:
        ``[3, H, W]`` float32 in ``[0, 1]``.

    Raises:
        UnsupportedImageError: empty, not an image, or a format nstzoo does not read.
        ImageTooLargeError: the header claims more than ``max_pixels`` pixels.
        CorruptImageError: the data is damaged.
    """
    if len(data) == 0:
        raise UnsupportedImageError(f"cannot read image {name}: the file is empty")
    limit = pixel_limit(max_pixels)
    im = _open(io.BytesIO(data), data[:64], name, limit)
    if im.format in ("JPEG", "MPO"):
        # Counting FF DA is exact for the scans (entropy-coded data stuffs every FF byte) and can
        # only over-count through metadata, which is far from the limit in real files.
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            im.close()
            raise CorruptImageError(f"cannot decode image {name}: {scans} JPEG scans, more than the "
                                    f"{MAX_JPEG_SCANS} any encoder writes (decoding them could take minutes)")
    try:
        if im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK"):
            try:
                return _decode_jpeg_torchvision(data)
            except RuntimeError:
                pass  # e.g. 12-bit or arithmetic-coded: Pillow may still read it, or say why not
        return _decode_pil(im, name)
    except DataError:
        raise
    except MemoryError:
        raise ImageTooLargeError(f"{name}: not enough memory to decode {im.size[0]} x {im.size[1]} pixels",
                                 hint=f"lower {MAX_PIXELS_ENV} or downscale the image") from None
    except Exception as err:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError, struct.error ...
        fmt = "WebP" if im.format == "WEBP" else (im.format or "image")
        raise CorruptImageError(f"cannot decode image {name} ({fmt}): {_reason(err)}") from None
    finally:
        im.close()


def _check_file(path: Path, name: str, limit: int) -> None:
    """Refuse what is not a regular file of a plausible size, before opening it."""
    try:
        info = path.stat()
    except OSError as err:
        what = "a loop of symbolic links" if err.errno == errno.ELOOP else (err.strerror or str(err)).lower()
        raise UnreadableImageError(f"cannot read image {name}: {what}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UnreadableImageError(f"cannot read image {name}: it is a folder")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO would block the read forever, /dev/zero would never end it.
        raise UnreadableImageError(f"cannot read image {name}: not a regular file (a pipe, socket or device)")
    if info.st_size > max_file_bytes(limit):
        raise ImageTooLargeError(f"{name} is too large: {info.st_size:,} bytes, more than any image of at most "
                                 f"{limit:,} pixels needs ({max_file_bytes(limit):,} bytes)",
                                 hint=f"raise the limit with {MAX_PIXELS_ENV}=N")


def read_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> Tensor:
    """Read and decode one image file; see :func:`decode_bytes`.

    Only regular files are read (a FIFO or device named ``x.png`` would block or never end), and
    only up to :func:`max_file_bytes` of them.

    Raises:
        UnreadableImageError: missing, not a regular file, or an OS error while reading.
        ImageTooLargeError, UnsupportedImageError, CorruptImageError: see :func:`decode_bytes`.
    """
    path = Path(path)
    name, limit = repr(str(path)), pixel_limit(max_pixels)
    _check_file(path, name, limit)
    try:
        with open(path, "rb") as fh:
            # Read at most one byte past the limit: the file may have grown since stat().
            data = fh.read(max_file_bytes(limit) + 1)
    except OSError as err:
        raise UnreadableImageError(f"cannot read image {name}: {(err.strerror or str(err)).lower()}") from None
    if len(data) > max_file_bytes(limit):
        raise ImageTooLargeError(f"{name} is too large: more than {max_file_bytes(limit):,} bytes")
    return decode_bytes(data, name=name, max_pixels=limit)
