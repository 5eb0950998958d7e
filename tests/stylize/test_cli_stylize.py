"""``nstzoo stylize`` on folders, lists and globs: every pair once, reruns skip, broken inputs counted,
grids, zip pairs, refused controls, and a video round trip."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from nstzoo.data.folder import save_image
from tests.test_cli_core import run

from .helpers import smooth


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "contents", tmp_path / "styles"
    content.mkdir()
    style.mkdir()
    for i in range(3):
        save_image(smooth(10 + i, 24, 32)[0], content / f"c{i}.png")
    for i in range(2):
        save_image(smooth(20 + i, 28, 28)[0], style / f"s{i}.jpg")
    (content / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # a corrupt input: skipped, counted
    return content, style


def stylize(capsys, *args: str) -> tuple[int, dict, str]:
    code, out, err = run(capsys, "stylize", "--random-init", "--device", "cpu", "--size", "24", "--json", *args)
    return code, (json.loads(out) if code == 0 else {}), err


def test_folder_by_folder_with_two_stylizers_writes_every_pair_once_then_skips(capsys, tmp_path, folders):
    content, style = folders
    out = tmp_path / "out"
    code, record, err = stylize(capsys, "-s", "reinhard,adain", "--content", str(content), "--style", str(style),
                                "--out", str(out), "--grid")
    assert code == 0, err
    expected = {f"c{i}__s{j}__{name}.png" for i in range(3) for j in range(2) for name in ("reinhard", "adain")}
    assert {p.name for p in out.glob("c*__*.png")} == expected
    assert record["written"] == 12 and record["skipped_existing"] == 0
    assert record["unreadable"] == 1 and list(record["unreadable_files"]) == [str(content / "broken.png")]
    assert sorted(Path(g).name for g in record["grids"]) == ["grid__adain.png", "grid__reinhard.png"]
    from PIL import Image

    assert Image.open(out / "grid__adain.png").size[0] > 3 * 192  # header column + 2 styles
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("c*__*.png")}

    code, record, err = stylize(capsys, "-s", "reinhard", "-s", "adain", "--content", str(content), "--style",
                                str(style), "--out", str(out))
    assert code == 0, err
    assert record["written"] == 0 and record["skipped_existing"] == 12 and record["unreadable"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("c*__*.png")} == stamps  # nothing rewritten

    code, record, err = stylize(capsys, "-s", "reinhard", "--content", str(content / "c0.png"), "--style",
                                str(style), "--out", str(out), "--overwrite")
    assert code == 0 and record["written"] == 2, err


def test_lists_globs_and_zip_pairs(capsys, tmp_path, folders):
    content, style = folders
    listing = tmp_path / "contents.txt"
    listing.write_text("# two of them\ncontents/c0.png\ncontents/c2.png\n")
    out = tmp_path / "zip"
    code, record, err = stylize(capsys, "-s", "reinhard", "--content", str(listing), "--style",
                                str(style / "s*.jpg"), "--pairs", "zip", "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["c0__s0__reinhard.png", "c2__s1__reinhard.png"]
    code, _, err = run(capsys, "stylize", "-s", "reinhard", "--content", str(tmp_path / "nothing*.png"),
                       "--style", str(style), "--out", str(out))
    assert code == 2 and "--content" in err and "matches no image files" in err


def test_one_pair_with_o_keeps_the_overwrite_refusal(capsys, tmp_path, folders):
    content, style = folders
    target = tmp_path / "one.png"
    args = ("-s", "adain", "--content", str(content / "c1.png"), "--style", str(style / "s0.jpg"), "-o", str(target))
    code, record, err = stylize(capsys, *args)
    assert code == 0 and record["size"] == [24, 32] and target.is_file(), err
    code, _, err = stylize(capsys, *args)
    assert code == 2 and "already exists; not replacing it" in err
    code, _, err = stylize(capsys, "-s", "adain", "--content", str(content), "--style", str(style), "-o",
                           str(tmp_path / "two.png"))
    assert code == 2 and "-o/--output writes one result" in err


@pytest.mark.parametrize("args, stylizer, refused", [
    (("--style-weights", "0.5,0.5"), "neat", "--style-weights"),
    (("--style-weights", "0.7,0.3"), "patch-wct", "--style-weights"),
])
def test_an_undeclared_control_is_exit_2_naming_the_stylizer(capsys, tmp_path, folders, args, stylizer, refused):
    content, style = folders
    code, _, err = run(capsys, "stylize", "-s", f"reinhard,{stylizer}", "--random-init", "--content", str(content),
                       "--style", str(style), "--out", str(tmp_path / "o"), *args)
    assert code == 2
    assert f"stylizer {stylizer!r} cannot honour {refused}" in err
    assert not (tmp_path / "o").exists()  # refused before any stylizer ran


def test_a_plugin_without_controls_refuses_alpha(capsys, tmp_path, folders):
    from nstzoo import hookimpl
    from nstzoo.registry import get_registry
    from nstzoo.specs import StylizerSpec

    class Mean(torch.nn.Module):
        def forward(self, content, style):
            return (content + style.mean(dim=(2, 3), keepdim=True)) / 2

    class Plugin:
        @hookimpl
        def register_stylizers(self, register):
            register(StylizerSpec(name="mean-mix", factory=Mean, summary="test", needs_weights=False))

    get_registry().register_plugin(Plugin(), "mean-mix-plugin")
    content, style = folders
    code, _, err = run(capsys, "stylize", "-s", "mean-mix", "--content", str(content), "--style", str(style),
                       "--out", str(tmp_path / "o"), "--alpha", "0.5")
    assert code == 2 and "stylizer 'mean-mix' cannot honour --alpha; it supports: none" in err
    # Colour preservation needs no declaration: it works on any stylizer's output.
    code, record, err = stylize(capsys, "-s", "mean-mix", "--content", str(content / "c0.png"), "--style",
                                str(style), "--out", str(tmp_path / "o"), "--preserve-color")
    assert code == 0 and record["written"] == 2, err
    code, out, _ = run(capsys, "stylizers", "show", "mean-mix", "--json")
    assert json.loads(out)["controls"] == ["preserve_color"]
    code, out, _ = run(capsys, "stylizers", "show", "adain", "--json")
    assert json.loads(out)["controls"] == ["alpha", "preserve_color", "style_mix"]


def test_style_interpolation_through_the_cli(capsys, tmp_path, folders):
    content, style = folders
    out = tmp_path / "mix"
    code, record, err = stylize(capsys, "-s", "reinhard", "--content", str(content / "c0.png"), "--style",
                                str(style / "s0.jpg"), "--style", str(style / "s1.jpg"), "--style-weights", "7,3",
                                "--out", str(out))
    assert code == 0, err
    assert [p.name for p in out.iterdir()] == ["c0__s0+s1__reinhard.png"]


# ----------------------------------------------------------------------------- video
def make_clip(path: Path, frames: int = 12, width: int = 64, height: int = 48, audio: bool = True) -> None:
    """A short H.264 clip: a white square moving across a dark gradient, with a 440 Hz AAC tone."""
    import av

    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=12)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            pixels = np.zeros((height, width, 3), dtype=np.uint8)
            pixels[..., 0] = np.linspace(20, 120, width, dtype=np.uint8)[None, :]
            pixels[10:26, 4 + 4 * i:20 + 4 * i] = 255
            for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            samples = 16000 * frames // 12
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)[None, :]
            chunk = sound.codec_context.frame_size or 1024
            for start in range(0, samples, chunk):
                frame = av.AudioFrame.from_ndarray(tone[:, start:start + chunk], format="fltp", layout="mono")
                frame.sample_rate = 16000
                frame.pts = start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)


def test_video_round_trip_keeps_frames_size_and_audio(capsys, tmp_path, folders):
    from nstzoo.stylize import probe_video

    _, style = folders
    clip = tmp_path / "clip.mp4"
    make_clip(clip)
    source = probe_video(clip)
    assert (source.frames, source.width, source.height, source.has_audio) == (12, 64, 48, True)
    out = tmp_path / "video"
    code, record, err = stylize(capsys, "-s", "reinhard", "--content", str(clip), "--style", str(style / "s0.jpg"),
                                "--out", str(out), "--size", "0", "--batch-size", "5")
    assert code == 0, err
    result = probe_video(out / "clip__s0__reinhard.mp4")
    assert (result.frames, result.width, result.height, result.has_audio) == (12, 64, 48, True)
    assert result.rate == Fraction(12)
    assert record["outputs"][0]["frames"] == 12
