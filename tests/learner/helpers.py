"""A small encoder plugin and data for learner tests (fast, with dropout so RNG replay matters)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nstzoo import EncoderSpec, StyleEncoder, hookimpl
from nstzoo.registry import Registry, reset_registry


class ToyEncoder(StyleEncoder):
    """[B,3,H,W] in [0,1] -> L2-normalised [B, dim]; per-sample independent (no BatchNorm)."""

    input_sizes = (16,)

    def __init__(self, dim: int = 16, dropout: float = 0.1):
        super().__init__()
        self.config = {"dim": dim, "dropout": dropout}
        self.embed_dim = dim
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Sequential(nn.Linear(8 * 2, 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, dim))

    def forward(self, images: torch.Tensor, frozen: None = None) -> torch.Tensor:
        x = torch.relu(self.conv(torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear")))
        feats = torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)
        return torch.nn.functional.normalize(self.head(feats), dim=1)


class ToyPlugin:
    @hookimpl
    def register_encoders(self, register):
        register(EncoderSpec(name="toy", factory=ToyEncoder, summary="test encoder"))


def install_toy_registry() -> Registry:
    """The installed plugins plus the toy encoder, as the process-wide registry."""
    registry = Registry()
    registry.register_plugin(ToyPlugin(), "toy-plugin")
    reset_registry(registry)
    return registry


def make_images(tmp: Path, count: int = 8, size: int = 32) -> tuple[Path, Path]:
    from nstzoo.data.generate import generate_folder

    content, style = tmp / "content", tmp / "style"
    generate_folder("content", count, size, 0, content)
    generate_folder("style", count, size, 1, style)
    return content, style


def sinusoid_image_folder(folder: Path, seed: int, count: int = 2) -> Path:
    """``count`` 32x32 RGB PNGs of seeded sinusoid patterns (PAMA/NeAT training tests)."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(count):
        f = rng.uniform(0.1, 0.6, size=3)
        image = np.stack([(np.sin(xx * f[0] + i) + 1) / 2, (np.cos(yy * f[1]) + 1) / 2,
                          (np.sin((xx + yy) * f[2]) + 1) / 2], -1)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder
