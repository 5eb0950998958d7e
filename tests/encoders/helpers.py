"""Shared pieces of the encoder tests: generated images, an in-test registry, the export round trip."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from nstzoo.registry import Registry, reset_registry
from nstzoo.specs import StyleEncoder
from nstzoo.weights import load_encoder, save_safetensors


def images(batch: int, seed: int = 0, size: tuple[int, int] = (40, 52)) -> torch.Tensor:
    """``[batch,3,H,W]`` in [0, 1]: smooth random colour fields plus a little texture (no two alike)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, 5, 5, generator=g)
    detail = torch.rand(batch, 3, *size, generator=g) * 0.2
    return (torch.nn.functional.interpolate(low, size=size, mode="bilinear") * 0.8 + detail).clamp(0, 1)


def registry_with(*modules: ModuleType, install: bool = False) -> Registry:
    """A registry holding only these plugin modules; ``install=True`` also makes it the process-wide one
    (the test conftest resets it after each test)."""
    reg = Registry(load_entrypoints=False)
    for module in modules:
        assert reg.register_plugin(module, module.__name__.rsplit(".", 1)[-1]), reg.errors
    if install:
        reset_registry(reg)
    return reg


def export_round_trip(encoder: StyleEncoder, name: str, path: Path, registry: Registry) -> StyleEncoder:
    """Write ``encoder`` as the learner's export does and read it back with :func:`nstzoo.load_encoder`."""
    save_safetensors(path, encoder.state_dict(), kind="encoder", name=name,
                     config={"encoder": name, "options": encoder.export_config(), "step": 0})
    torch.manual_seed(12345)  # a rebuilt module that ignored the file would not match by chance
    return load_encoder(path, registry=registry)


def assert_unit_rows(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    torch.testing.assert_close(x.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5, rtol=0)
