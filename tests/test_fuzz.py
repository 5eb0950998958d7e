"""Fuzzing the readers: seeded corruptions of images and weight files must be read or refused by name, never crash.

Every case is one of: bit flips, a truncation, a changed chunk/segment length field, a forged
header size (width x height far beyond the pixel limit), a rewritten byte span, and for weights
also a forged safetensors header, a NaN/inf injection. Each must end as

* ``ok``: a valid result (an image ``[3,H,W]`` in [0, 1], finite; a mapping of finite tensors), or
* ``refused``: a :class:`~nstzoo.errors.DataError` / :class:`~nstzoo.errors.WeightsError` whose
  message names the file.

Anything else (another exception, a hang, a crash) fails. The cases run in a child process
(``python -m tests.test_fuzz ...``): a decoder that aborts the process (SIGSEGV, as torchvision's
libpng did on a flipped bit) then fails the test with the case that did it, instead of killing pytest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEED = 20240601
CASES = {"PNG": 110, "JPEG": 110, "WEBP": 70, "GIF": 20, "TIFF": 20, "BMP": 20, "safetensors": 70, "pth": 50}
SLOW_CASE_S = 5.0  # a single case slower than this counts as a hang


# ----------------------------------------------------------------------------- mutations
def _chunks_png(data: bytes) -> list[int]:
    """Offsets of the PNG chunks' length fields."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        out.append(pos)
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    return out


def _segments_jpeg(data: bytes) -> list[int]:
    """Offsets of the JPEG marker segments' length fields (up to the scan)."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        out.append(pos + 2)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return out


def change_length(fmt: str, data: bytearray, rng: random.Random) -> bytearray:
    """Set one length field to a wrong value: zero, one off, half, or huge."""
    if fmt == "PNG":
        at, width = rng.choice(_chunks_png(bytes(data)) or [8]), 4
    elif fmt == "JPEG":
        at, width = rng.choice(_segments_jpeg(bytes(data)) or [4]), 2
    elif fmt == "WEBP":
        at, width = rng.choice([4, 16]), 4  # RIFF size, first chunk's size (little endian)
    else:
        at, width = rng.randrange(0, max(1, min(len(data) - 4, 64))), 4
    old = int.from_bytes(data[at:at + width], "little" if fmt == "WEBP" else "big")
    new = rng.choice([0, old + 1, max(0, old - 1), old // 2, 2 ** (8 * width) - 1, rng.randrange(2 ** (8 * width))])
    data[at:at + width] = (new % 2 ** (8 * width)).to_bytes(width, "little" if fmt == "WEBP" else "big")
    return data


def forge_size(fmt: str, data: bytearray, rng: random.Random) -> bytearray:
    """Claim a huge (or zero) width x height in the header, keeping the rest of the file."""
    w, h = rng.choice([(30000, 30000), (65535, 65535), (16383, 16383), (0, 24), (100000, 1)])
    if fmt == "PNG":
        data[16:24] = struct.pack(">II", w, h)
        if rng.random() < 0.7:  # usually a forger fixes the CRC too
            data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif fmt == "JPEG":
        sof = next((i for i in range(len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2)), None)
        if sof is not None:
            data[sof + 5:sof + 9] = struct.pack(">HH", min(h, 65535), min(w, 65535))
    elif fmt == "WEBP":
        if data[12:16] == b"VP8 ":
            data[26:30] = struct.pack("<HH", min(w, 16383), min(h, 16383))
        elif data[12:16] == b"VP8L":
            bits = (min(w, 16384) - 1 & 0x3FFF) | ((min(h, 16384) - 1 & 0x3FFF) << 14) | (int.from_bytes(data[21:25], "little") & ~0xFFFFFFF)
            data[21:25] = (bits & 0xFFFFFFFF).to_bytes(4, "little")
    elif fmt == "GIF":
        data[6:10] = struct.pack("<HH", min(w, 65535), min(h, 65535))
    elif fmt == "BMP":
        data[18:26] = struct.pack("<ii", min(w, 2**31 - 1), min(h, 2**31 - 1))
    elif fmt == "TIFF":
        data[rng.randrange(8, max(9, len(data) - 4)):][:4] = b"\xff\xff\x00\x00"
    return data


def mutate(fmt: str, base: bytes, rng: random.Random) -> tuple[str, bytes]:
    data = bytearray(base)
    kind = rng.choice(["flip", "truncate", "length", "forge", "span"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "length":
        data = change_length(fmt, data, rng)
    elif kind == "forge":
        data = forge_size(fmt, data, rng)
    else:
        start = rng.randrange(len(data))
        data[start:start + rng.randint(1, 64)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return kind, bytes(data)


# ----------------------------------------------------------------------------- base files
def base_images() -> dict[str, bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(0, 255, 24), np.linspace(0, 255, 32), indexing="ij")
    smooth = np.stack([yy, xx, 255 - yy], -1).astype(np.uint8)
    noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # torchvision's EXIF parser gets fuzzed too
    out = {}
    for fmt, kw in (("PNG", {}), ("JPEG", {"quality": 90, "exif": exif.tobytes()}), ("WEBP", {"quality": 80}),
                    ("GIF", {}), ("TIFF", {"compression": "tiff_lzw"}), ("BMP", {})):
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, fmt, **kw)
        out[fmt] = buf.getvalue()
    buf = io.BytesIO()  # a second PNG flavour: palette + transparency
    Image.fromarray(noisy).quantize(16).save(buf, "PNG", transparency=0)
    out["PNG-P"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.dstack([noisy, smooth[..., :1]]), "RGBA").save(buf, "WEBP", lossless=True)
    out["WEBP-L"] = buf.getvalue()
    return out


# ----------------------------------------------------------------------------- the child: run the cases
def _classify(run, name: str, refusal: type[Exception]) -> tuple[str, str]:
    try:
        detail = run()
    except refusal as err:
        message = str(err)
        if name not in message:
            return "bad-message", message
        return "refused", type(err).__name__
    except Exception as err:  # noqa: BLE001 - the finding this test exists for
        return "unexpected", f"{type(err).__name__}: {err}"
    return "ok", detail


def fuzz_images(seed: int, tmp: Path) -> list[dict[str, Any]]:
    import torch

    from nstzoo.data.decode import decode_bytes, pixel_limit
    from nstzoo.errors import DataError

    bases = base_images()
    results = []
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"):
        flavours = [k for k in bases if k.split("-")[0] == fmt]
        for i in range(CASES[fmt]):
            rng = random.Random(f"{seed}-{fmt}-{i}")
            flavour = flavours[i % len(flavours)]
            kind, data = mutate(fmt, bases[flavour], rng)
            name = f"'case-{flavour}-{i}.{fmt.lower()}'"
            print(f"case {name} {kind}", file=sys.stderr, flush=True)

            def run() -> str:
                image = decode_bytes(data, name)
                assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3, image.shape
                assert image.shape[1] * image.shape[2] <= pixel_limit()
                assert bool(torch.isfinite(image).all()) and float(image.min()) >= 0 and float(image.max()) <= 1
                return "x".join(map(str, image.shape))

            start = time.perf_counter()
            outcome, detail = _classify(run, name, DataError)
            results.append({"format": fmt, "case": name, "kind": kind, "outcome": outcome, "detail": detail,
                            "seconds": time.perf_counter() - start})
    return results


def base_weights(tmp: Path) -> tuple[dict[str, Any], bytes, bytes]:
    import torch
    from safetensors.torch import save

    g = torch.Generator().manual_seed(0)
    state = {"enc.weight": torch.randn(4, 3, 3, 3, generator=g), "enc.bias": torch.randn(4, generator=g),
             "dec.weight": torch.randn(3, 4, 3, 3, generator=g).half(), "step": torch.tensor([7])}
    buf = io.BytesIO()
    torch.save({"state_dict": state, "epoch": 3}, buf)
    return state, save(state, metadata={"nstzoo": json.dumps({"format": 1, "kind": "stylizer", "name": "t"})}), buf.getvalue()


def mutate_weights(kind_of_file: str, base: bytes, state: dict[str, Any], rng: random.Random) -> tuple[str, bytes]:
    import torch
    from safetensors.torch import save

    choice = rng.choice(["flip", "truncate", "span", "header", "nonfinite"] if kind_of_file == "safetensors"
                        else ["flip", "truncate", "span", "nonfinite"])
    if choice == "header":  # forge the u64 header length, or a tensor's shape / offsets / dtype
        data = bytearray(base)
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        key = rng.choice(sorted(k for k in header if k != "__metadata__"))
        what = rng.choice(["length", "shape", "offsets", "dtype"])
        if what == "length":
            data[:8] = rng.choice([0, size + 1, size - 1, 2**63, 2**40]).to_bytes(8, "little")
            return "header-length", bytes(data)
        if what == "shape":
            header[key]["shape"] = [rng.choice([0, 2**31, 10**12]), 3]
        elif what == "offsets":
            header[key]["data_offsets"] = [0, rng.choice([1, 2**40, 10**18])]
        else:
            header[key]["dtype"] = rng.choice(["F64", "I8", "BOGUS"])
        text = json.dumps(header).encode()
        return f"header-{what}", len(text).to_bytes(8, "little") + text + bytes(data[8 + size:])
    if choice == "nonfinite":
        bad = {k: v.clone() for k, v in state.items()}
        key = rng.choice(["enc.weight", "enc.bias", "dec.weight"])
        bad[key].view(-1)[rng.randrange(bad[key].numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
        if kind_of_file == "safetensors":
            return "nonfinite", save(bad)
        buf = io.BytesIO()
        torch.save({"state_dict": bad}, buf)
        return "nonfinite", buf.getvalue()
    kind, data = mutate("weights", base, rng)
    return kind, data


def fuzz_weights(seed: int, tmp: Path) -> list[dict[str, Any]]:
    import torch

    from nstzoo.errors import WeightsError
    from nstzoo.weights import load_safetensors, read_checkpoint, unwrap_state_dict

    state, st_bytes, pth_bytes = base_weights(tmp)
    results = []
    for file_kind, base in (("safetensors", st_bytes), ("pth", pth_bytes)):
        for i in range(CASES[file_kind]):
            rng = random.Random(f"{seed}-{file_kind}-{i}")
            kind, data = mutate_weights(file_kind, base, state, rng)
            path = tmp / f"case-{i}.{file_kind}"
            path.write_bytes(data)
            print(f"case {path.name} {kind}", file=sys.stderr, flush=True)

            def run() -> str:
                if file_kind == "safetensors":
                    loaded = load_safetensors(path)[0]
                else:  # the `nstzoo weights import` path: read, unwrap, then the importer's finiteness check
                    from nstzoo.weights import check_finite

                    loaded = unwrap_state_dict(read_checkpoint(path), path)
                    check_finite(loaded, str(path))
                assert all(isinstance(v, torch.Tensor) for v in loaded.values())
                assert all(bool(torch.isfinite(v).all()) for v in loaded.values() if v.is_floating_point())
                return f"{len(loaded)} tensors"

            start = time.perf_counter()
            outcome, detail = _classify(run, str(path), WeightsError)
            results.append({"format": file_kind, "case": path.name, "kind": kind, "outcome": outcome,
                            "detail": detail, "seconds": time.perf_counter() - start})
            path.unlink()
    return results


def fuzz_cli(seed: int, tmp: Path) -> list[dict[str, Any]]:
    """``nstzoo stylize -s reinhard`` on a few corrupted files, through the CLI's own entry point."""
    from nstzoo.cli import main

    bases = base_images()
    style = tmp / "style.png"
    style.write_bytes(bases["PNG"])
    results = []
    for i, fmt in enumerate(["PNG", "PNG", "JPEG", "WEBP", "PNG", "GIF"]):
        rng = random.Random(f"{seed}-cli-{i}")
        if i == 4:  # a decompression bomb's header: 30000 x 30000 with a valid CRC
            data = bytearray(bases[fmt])
            data[16:24] = struct.pack(">II", 30000, 30000)
            data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
            kind = "forged-30000x30000"
        else:
            kind, data = mutate(fmt, bases[fmt], rng)
        content = tmp / f"content-{i}.{fmt.lower()}"
        content.write_bytes(bytes(data))
        out = tmp / f"out-{i}.png"
        print(f"cli case {content.name} {kind}", file=sys.stderr, flush=True)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["stylize", "-s", "reinhard", "--content", str(content), "--style", str(style),
                      "-o", str(out), "--size", "32", "--device", "cpu"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        text = err.getvalue()
        if code == 0 and out.is_file():
            outcome = "ok"
        elif code == 2 and str(content) in text and "Traceback" not in text and not out.exists():
            outcome = "refused"
        else:
            outcome = "unexpected"
        results.append({"format": fmt, "case": content.name, "kind": kind, "outcome": outcome,
                        "detail": f"exit {code}: {text.strip()[-300:]}", "seconds": 0.0})
    return results


def child(which: str, seed: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for part in which.split(","):
            results += {"images": fuzz_images, "weights": fuzz_weights, "cli": fuzz_cli}[part](seed, Path(tmp))
    print(json.dumps(results))


def run_child(which: str, home: Path, timeout: float = 240) -> list[dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NSTZOO_HOME": str(home)}
    env.pop("NSTZOO_MAX_PIXELS", None)
    proc = subprocess.run([sys.executable, "-m", "tests.test_fuzz", which, str(SEED)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    last_case = next((line for line in reversed(proc.stderr.splitlines()) if "case " in line), "(none)")
    assert proc.returncode == 0, (f"the fuzzing process died with exit {proc.returncode} during {last_case}; "
                                  f"stderr tail: {proc.stderr[-1500:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def summarize(results: list[dict[str, Any]]) -> dict[str, Counter]:
    table: dict[str, Counter] = {}
    for r in results:
        table.setdefault(r["format"], Counter())[r["outcome"]] += 1
    return table


# ----------------------------------------------------------------------------- the tests
def test_fuzz_image_and_weight_readers_survive_and_classify_every_case(tmp_path):
    start = time.perf_counter()
    results = run_child("images,weights", tmp_path)
    elapsed = time.perf_counter() - start
    table = summarize(results)
    failures = [r for r in results if r["outcome"] not in ("ok", "refused")]
    assert not failures, json.dumps(failures[:5], indent=1)
    assert len(results) == sum(CASES.values()) >= 300
    slow = [r for r in results if r["seconds"] > SLOW_CASE_S]
    assert not slow, slow[:3]
    for fmt, outcome in table.items():
        assert outcome["refused"] > 0, (fmt, outcome)  # the corruptions do corrupt
    for fmt in ("PNG", "JPEG", "WEBP", "safetensors", "pth"):
        assert table[fmt]["ok"] > 0 or fmt == "PNG", (fmt, table[fmt])  # and some leave a readable file
    too_large = [r for r in results if r["detail"] == "ImageTooLargeError"]
    assert {r["format"] for r in too_large} >= {"PNG", "JPEG", "WEBP"}  # forged sizes refused from the header
    nonfinite = [r for r in results if r["kind"] == "nonfinite"]
    assert nonfinite and all(r["outcome"] == "refused" for r in nonfinite)
    print(f"\n{len(results)} cases in {elapsed:.1f}s: " + ", ".join(f"{k} {dict(v)}" for k, v in table.items()))


def test_fuzz_stylize_command_survives_corrupted_inputs(tmp_path):
    results = run_child("cli", tmp_path)
    assert all(r["outcome"] in ("ok", "refused") for r in results), json.dumps(results, indent=1)
    assert sum(r["outcome"] == "refused" for r in results) >= 2
    forged = next(r for r in results if r["kind"] == "forged-30000x30000")
    assert forged["outcome"] == "refused" and "too large" in forged["detail"]


def test_console_script_exits_2_on_a_corrupt_png(tmp_path):
    # The installed `nstzoo` entry point, once: exit 2 and one line, where it used to die with exit 139.
    bases = base_images()
    data = bytearray(bases["PNG"])
    at = data.index(b"IDAT")
    data[at + 4 + int.from_bytes(data[at - 4:at], "big") // 2] ^= 0x10
    (tmp_path / "c.png").write_bytes(bytes(data))
    (tmp_path / "s.png").write_bytes(bases["PNG"])
    exe = Path(sys.executable).with_name("nstzoo")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "nstzoo"]
    proc = subprocess.run([*command, "stylize", "-s", "reinhard", "--content", str(tmp_path / "c.png"), "--style",
                           str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png")], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-1000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / "c.png") in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.png").exists()


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]))
