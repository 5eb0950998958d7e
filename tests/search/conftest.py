"""Fixtures for the style-search tests: a tiny exported encoder and a small synthetic test set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.learner.helpers import ToyEncoder, install_toy_registry, make_images


@pytest.fixture(autouse=True)
def toy_registry(private_store):
    """The toy encoder registered for every test here (after conftest's fresh registry)."""
    install_toy_registry()


def export_toy(path: Path, seed: int) -> Path:
    """A randomly initialised 16-D toy encoder, exported as an nstzoo encoder file."""
    from nstzoo.weights import save_safetensors

    torch.manual_seed(seed)
    model = ToyEncoder().eval()
    return save_safetensors(path, model.state_dict(), kind="encoder", name="toy",
                            config={"encoder": "toy", "options": {}})


@pytest.fixture
def weights(tmp_path) -> Path:
    return export_toy(tmp_path / "toy.safetensors", seed=0)


@pytest.fixture
def other_weights(tmp_path) -> Path:
    return export_toy(tmp_path / "toy-other.safetensors", seed=1)


@pytest.fixture(scope="module")
def testset_dir(tmp_path_factory) -> Path:
    """10 procedural styles x 6 contents stylized by `reinhard` at 32 px: 60 stylized + 10 style + 6 content."""
    from nstzoo.eval.testset import build_testset

    root = tmp_path_factory.mktemp("search-testset")
    content, style = make_images(root / "src", count=10, size=48)
    out = root / "testset"
    build_testset(["reinhard"], content, style, out, n_styles=10, n_contents=6, size=32, log=lambda _: None)
    shutil.rmtree(root / "src")
    return out


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder of 12 procedural images (6 contents, 6 styles) in two sub-folders."""
    content, style = make_images(tmp_path / "images", count=6)
    return content.parent
