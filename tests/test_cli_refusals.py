"""No silent overwrite, no traceback: the CLI refuses bad outputs and bad inputs in one line, exit 2, files untouched."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nstzoo import StylizerSpec, hookimpl
from nstzoo.data.folder import save_image
from nstzoo.registry import Registry, reset_registry
from nstzoo.weights import METADATA_KEY, read_checkpoint, sha256_file, unwrap_state_dict, weights_path
from tests.conftest import smooth_image
from tests.test_cli_core import run
from tests.test_weights import TinyNet, official_file


def only_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash: compared before and after a refused command."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def images(tmp_path):
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    save_image(smooth_image(1, 24), content)
    save_image(smooth_image(2, 24), style)
    return content, style


def stylize(capsys, images, output, *extra, stylizer="reinhard"):
    content, style = images
    return run(capsys, "stylize", "-s", stylizer, "--content", str(content), "--style", str(style),
               "-o", str(output), "--size", "24", *extra)


# ----------------------------------------------------------------------------- stylize -o
def test_stylize_refuses_an_existing_output_unless_overwrite(capsys, tmp_path, images):
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    before = digests(tmp_path)
    code, _, err = stylize(capsys, images, out)
    assert code == 2
    assert only_error_line(err) == f"error: --output {str(out)!r} already exists; not replacing it"
    assert "--overwrite" in err and digests(tmp_path) == before
    code, _, err = stylize(capsys, images, out, "--overwrite")
    assert code == 0, err
    assert out.read_bytes() != b"precious" and Image.open(out).size == (24, 24)


def test_stylize_never_overwrites_an_input(capsys, tmp_path, images):
    content, style = images
    os.symlink(style, tmp_path / "style-link.png")
    before = digests(tmp_path)
    for output, option in ((content, "--content"), (tmp_path / "style-link.png", "--style"),
                           (Path(os.path.relpath(style)) if style.is_absolute() else style, "--style")):
        code, _, err = stylize(capsys, images, output, "--overwrite")
        assert code == 2
        assert f"is also the {option} file; refusing to overwrite an input" in only_error_line(err)
    assert digests(tmp_path) == before


def test_stylize_bad_output_paths_are_one_line_errors(capsys, tmp_path, images):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    before = digests(tmp_path)
    cases = [(tmp_path / "folder", "is a folder"), (tmp_path / "afile" / "out.png", "is a file, not a folder"),
             (tmp_path / "out.gif", "use a file name ending in .png or .jpg or .jpeg")]
    if os.path.isdir("/proc/self"):  # a folder nobody can create files in, whoever runs the tests
        cases.append((Path("/proc/nstzoo-out.png"), "cannot write it"))
    for output, expected in cases:
        code, _, err = stylize(capsys, images, output)
        assert code == 2, (output, err)
        line = only_error_line(err)
        assert expected in line and str(output) in line
    assert digests(tmp_path) == before


def corrupt_png(data: bytes) -> bytes:
    data = bytearray(data)
    at = data.index(b"IDAT")
    data[at + 4 + (int.from_bytes(data[at - 4:at], "big") // 2)] ^= 0x10
    return bytes(data)


def test_stylize_bad_inputs_are_one_line_errors_naming_the_file(capsys, tmp_path, images):
    content, style = images
    broken = tmp_path / "broken.png"
    broken.write_bytes(corrupt_png(content.read_bytes()))  # segfaulted the process before
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    for bad, expected in ((broken, "(PNG)"), (text, "not an image nstzoo reads")):
        code, _, err = stylize(capsys, (bad, style), tmp_path / "out.png")
        assert code == 2
        line = only_error_line(err)
        assert str(bad) in line and expected in line and "BytesIO" not in line
    assert not (tmp_path / "out.png").exists()


def test_stylize_refuses_nan_weights_instead_of_a_black_image(capsys, tmp_path, images):
    from nstzoo.registry import get_registry

    spec = get_registry().stylizer("dumoulin")
    state = {k: v.clone() for k, v in spec.factory(**dict(spec.default_options)).state_dict().items()}
    key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[key].view(-1)[0] = float("nan")
    weights = tmp_path / "nan.safetensors"
    save_file(state, str(weights), metadata={METADATA_KEY: json.dumps({"format": 1, "kind": "stylizer",
                                                                        "name": "dumoulin", "config": {}})})
    code, _, err = stylize(capsys, images, tmp_path / "out.png", "--weights", str(weights), stylizer="dumoulin")
    assert code == 2
    line = only_error_line(err)
    assert str(weights) in line and f"{key!r}: 1 NaN" in line
    assert not (tmp_path / "out.png").exists()


# ----------------------------------------------------------------------------- weights import
def import_tiny(paths):
    mapping = {"encoder.0.weight": "enc.weight", "encoder.0.bias": "enc.bias",
               "decoder.0.weight": "dec.weight", "decoder.0.bias": "dec.bias"}
    state = unwrap_state_dict(read_checkpoint(paths[0]), paths[0])
    return {mapping.get(k, k): v for k, v in state.items()}


class TinyPlugin:
    @hookimpl
    def register_stylizers(self, register):
        register(StylizerSpec(name="tiny", factory=TinyNet, summary="t", weight_files=("tiny.pth",),
                              import_official=import_tiny))


def install(*plugins: tuple[object, str]) -> None:
    registry = Registry(load_entrypoints=False)
    for plugin, name in plugins:
        registry.register_plugin(plugin, name)
    reset_registry(registry)


def test_weights_import_refuses_to_replace_stored_weights_without_force(capsys, tmp_path):
    install((TinyPlugin(), "tiny-plugin"))
    path, _ = official_file(tmp_path)
    code, _, err = run(capsys, "weights", "import", "tiny", str(path))
    assert code == 0, err
    stored = weights_path("tiny")
    first = sha256_file(stored)
    state = torch.load(path, weights_only=True)
    state["state_dict"]["decoder.0.bias"] += 1  # a different checkpoint for the same stylizer
    torch.save(state, path)
    code, _, err = run(capsys, "weights", "import", "tiny", str(path))
    assert code == 2
    assert only_error_line(err) == f"error: weights for 'tiny' are already in the store ({stored}); not replacing them"
    assert "--force" in err and sha256_file(stored) == first
    code, _, err = run(capsys, "weights", "import", "tiny", str(path), "--force")
    assert code == 0, err
    assert sha256_file(stored) != first

    # -o: an existing file needs --force too, and an input is never the output.
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"keep me")
    code, _, err = run(capsys, "weights", "import", "tiny", str(path), "-o", str(other))
    assert code == 2 and "already exists" in only_error_line(err) and other.read_bytes() == b"keep me"
    before = sha256_file(path)
    code, _, err = run(capsys, "weights", "import", "tiny", str(path), "-o", str(path), "--force")
    assert code == 2 and "is also the input file" in only_error_line(err) and sha256_file(path) == before


# ----------------------------------------------------------------------------- export -o
def test_export_refuses_an_existing_output_before_loading_anything(capsys, tmp_path):
    from nstzoo.cli import learner
    from nstzoo.runs import CHECKPOINT, CONFIG

    install((learner, "learner"))
    run_dir = tmp_path / "run"
    (run_dir / CHECKPOINT).parent.mkdir(parents=True)
    (run_dir / CHECKPOINT).write_bytes(b"not read: the output is checked first")
    (run_dir / CONFIG).write_text("steps: 1\n")
    target = tmp_path / "enc.safetensors"
    target.write_bytes(b"an earlier export")
    before = digests(tmp_path)
    code, _, err = run(capsys, "export", str(run_dir), "-o", str(target))
    assert code == 2
    assert only_error_line(err) == f"error: --output {str(target)!r} already exists; not replacing it"
    assert digests(tmp_path) == before
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, "export", str(run_dir), "-o", str(tmp_path / "afile" / "x.safetensors"))
    assert code == 2 and "x.safetensors" in only_error_line(err)


# ----------------------------------------------------------------------------- testset build
def folders(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "contents", tmp_path / "styles"
    for folder, seed in ((content, 1), (style, 5)):
        for i in range(2):
            save_image(smooth_image(seed + i, 24), folder / f"{i}.png")
    return content, style


def build(capsys, content, style, out, *extra):
    return run(capsys, "testset", "build", "--stylizers", "reinhard", "--content", str(content), "--style",
               str(style), "--out", str(out), "--device", "cpu", *extra)


@pytest.fixture
def testset_cli():
    from nstzoo.cli import learner
    from nstzoo.stylizers import reinhard

    install((learner, "learner"), (reinhard, "reinhard"))


def test_testset_bad_size_writes_nothing_and_a_corrected_rerun_works(capsys, tmp_path, testset_cli):
    content, style = folders(tmp_path)
    out = tmp_path / "ts"
    for bad, expected in ((("--size", "0"), "--size must be at least 1 pixel, got 0"),
                          (("--size", "100000"), "exceed the pixel limit"),
                          (("--size", "16", "--batch-size", "0"), "--batch-size must be at least 1"),
                          (("--size", "16", "--styles", "0"), "--styles must be at least 1")):
        code, _, err = build(capsys, content, style, out, *bad)
        assert code == 2 and expected in only_error_line(err)
        assert not out.exists()
    code, out_json, err = build(capsys, content, style, out, "--size", "16", "--json")
    assert code == 0, err
    assert json.loads(out_json)["stylized"] == 4


def test_testset_build_json_from_a_build_with_no_images_yet_is_replaced(capsys, tmp_path, testset_cli):
    content, style = folders(tmp_path)
    out = tmp_path / "ts"
    out.mkdir()
    (out / "build.json").write_text(json.dumps({"size": 99, "styles": [], "contents": []}))
    code, _, err = build(capsys, content, style, out, "--size", "16")
    assert code == 0, err
    assert json.loads((out / "build.json").read_text())["size"] == 16
    # With images on disk, other settings are still refused (they would mix).
    code, _, err = build(capsys, content, style, out, "--size", "20")
    assert code == 2 and "built with other size" in only_error_line(err)


def test_testset_corrupt_build_json_is_a_clear_error(capsys, tmp_path, testset_cli):
    content, style = folders(tmp_path)
    out = tmp_path / "ts"
    code, _, err = build(capsys, content, style, out, "--size", "16")
    assert code == 0, err
    (out / "build.json").write_text('{"size": 16, "sty')
    before = digests(out)
    code, _, err = build(capsys, content, style, out, "--size", "16")
    assert code == 2
    assert f"{out / 'build.json'} is corrupt" in only_error_line(err) and "hint:" in err
    assert digests(out) == before
    (tmp_path / "afile").write_text("x")
    code, _, err = build(capsys, content, style, tmp_path / "afile", "--size", "16")
    assert code == 2 and "is a file, not a folder" in only_error_line(err)


def test_png_corruption_helper_really_corrupts():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    with pytest.raises(OSError):
        Image.open(io.BytesIO(corrupt_png(buf.getvalue()))).load()
