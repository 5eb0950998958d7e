"""Test-wide settings: offline hub, one thread per worker, a private weights store per test."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

# pytest-xdist runs one worker per core; more threads per worker only oversubscribe 2 cores.
torch.set_num_threads(int(os.environ.get("NSTZOO_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def private_store(tmp_path_factory, monkeypatch):
    """Each test sees an empty NSTZOO_HOME and a freshly loaded registry."""
    from nstzoo import registry

    monkeypatch.setenv("NSTZOO_HOME", str(tmp_path_factory.mktemp("nstzoo_home")))
    for var in ("NSTZOO_LOAD_PLUGINS", "NSTZOO_STRICT_PLUGINS", "NSTZOO_TRACE_PLUGINS", "NSTZOO_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    registry.reset_registry()
    yield
    registry.reset_registry()


def smooth_image(seed: int, size: int = 32, batch: int | None = None) -> torch.Tensor:
    """A smooth random image (low-frequency noise) in [0, 1]: ``[3,S,S]`` or ``[B,3,S,S]``."""
    g = torch.Generator().manual_seed(seed)
    n = batch or 1
    low = torch.rand(n, 3, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return img if batch else img[0]
