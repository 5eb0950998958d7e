"""Training AdaIN and SANet on tiny generated images: loss goes down, resume is exact, export loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from nstzoo.stylizer_training import train_stylizer
from nstzoo.errors import ConfigError
from nstzoo.stylizers import adain, sanet
from nstzoo.registry import Registry
from nstzoo.weights import load_safetensors, load_stylizer


def _save(image: torch.Tensor, path: Path) -> None:
    write_png((image.clamp(0, 1) * 255).round().to(torch.uint8), str(path))


def make_folders(root: Path, n: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """Smooth colour gradients as contents, coloured stripes as styles."""
    content_dir, style_dir = root / "content", root / "style"
    content_dir.mkdir(parents=True)
    style_dir.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    h, w = size
    ys, xs = torch.linspace(0, 1, h).view(h, 1), torch.linspace(0, 1, w).view(1, w)
    for i in range(n):
        a, b, c = torch.rand(3, 3, 1, 1, generator=gen)
        _save(a * ys + b * xs + c * (1 - ys) * (1 - xs), content_dir / f"c{i}.png")
        period = 3 + i
        stripes = ((torch.arange(w).view(1, w) + torch.arange(h).view(h, 1) * (i % 2)) // period % 2).float()
        colors = torch.rand(2, 3, 1, 1, generator=gen)
        _save(colors[0] * stripes + colors[1] * (1 - stripes), style_dir / f"s{i}.png")
    (style_dir / "broken.png").write_bytes(b"not a png")  # must be skipped with a warning
    return content_dir, style_dir


def config(root: Path, out: str, **overrides) -> dict:
    content_dir, style_dir = root / "content", root / "style"
    return {"content": content_dir, "style": style_dir, "out": root / out, "steps": 4,
            "batch_size": 2, "size": 32, "load_size": 40, "lr": 1e-3, "vgg": None, "random_init_vgg": True,
            "seed": 3, "device": "cpu", **overrides}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    make_folders(root, 3, (48, 40))
    return root


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["total"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.filterwarnings("ignore:skipping unreadable")
def test_adain_loss_decreases_and_export_loads(tmp_path):
    # One content and one style, no crop randomness: the loss curve reflects learning only.
    make_folders(tmp_path, 1, (32, 32))
    out = train_stylizer(adain.SPEC, config(tmp_path, "run", steps=12, load_size=32, batch_size=1))
    curve = losses(tmp_path / "run")
    assert len(curve) == 12 and all(map(lambda v: v == v, curve))
    assert sum(curve[-3:]) / 3 < 0.8 * sum(curve[:3]) / 3

    registry = Registry(load_entrypoints=False)
    registry.register_plugin(adain, "adain")
    model = load_stylizer("adain", weights=out, registry=registry)
    with torch.no_grad():
        result = model(torch.rand(2, 3, 36, 28), torch.rand(2, 3, 32, 32))
    assert result.shape == (2, 3, 36, 28) and torch.isfinite(result).all()


@pytest.mark.filterwarnings("ignore:skipping unreadable")
def test_adain_resume_matches_an_uninterrupted_run(data_root):
    with pytest.warns(RuntimeWarning, match="broken.png"):
        straight = train_stylizer(adain.SPEC, config(data_root, "straight"))
    train_stylizer(adain.SPEC, config(data_root, "split", steps=2))
    resumed = train_stylizer(adain.SPEC, config(data_root, "split"), resume=True)
    a, _ = load_safetensors(straight)
    b, _ = load_safetensors(resumed)
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(line)["step"] for line in (data_root / "split" / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2, 3, 4]
    assert losses(data_root / "split") == losses(data_root / "straight")


@pytest.mark.filterwarnings("ignore:skipping unreadable")
def test_resume_refuses_different_settings(data_root):
    train_stylizer(adain.SPEC, config(data_root, "refuse", steps=1))  # its own run: no dependence on test order
    with pytest.raises(ConfigError, match="batch_size"):
        train_stylizer(adain.SPEC, config(data_root, "refuse", batch_size=1, steps=6), resume=True)


def test_bad_config_is_named(data_root):
    with pytest.raises(ConfigError, match="stepz"):
        train_stylizer(adain.SPEC, {**config(data_root, "x"), "stepz": 3})
    with pytest.raises(ConfigError, match="vgg"):
        train_stylizer(adain.SPEC, config(data_root, "x", random_init_vgg=False))
    with pytest.raises(ConfigError, match="size"):
        train_stylizer(adain.SPEC, config(data_root, "x", size=30))


@pytest.mark.filterwarnings("ignore:skipping unreadable")
def test_sanet_training_smoke(data_root):
    out = train_stylizer(sanet.SPEC, config(data_root, "sanet", steps=2))
    records = [json.loads(line) for line in (data_root / "sanet" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        for key in ("content", "style", "identity1", "identity2", "total"):
            assert r[key] == r[key] and abs(r[key]) < float("inf")
    registry = Registry(load_entrypoints=False)
    registry.register_plugin(sanet, "sanet")
    with torch.no_grad():
        result = load_stylizer("sanet", weights=out, registry=registry)(torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 32))
    assert result.shape == (1, 3, 32, 48)
