"""Small test sets, a tiny exported encoder and a tiny ablation profile for the experiment commands' tests."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from tests.learner.helpers import ToyEncoder, make_images


def build_small_testset(root: Path, stylizers: tuple[str, ...] = ("reinhard", "patch-wct"), styles: int = 4,
                        contents: int = 3, size: int = 32) -> Path:
    """``styles x contents`` procedural images stylized by each weight-free stylizer, at ``size`` px."""
    from nstzoo.eval.testset import build_testset

    content, style = make_images(root / "src", count=max(styles, contents), size=48)
    out = root / "testset"
    build_testset(list(stylizers), content, style, out, n_styles=styles, n_contents=contents, size=size,
                  log=lambda _: None)
    return out


def export_toy(path: Path, seed: int = 0) -> Path:
    """A randomly initialised 16-D toy encoder (tests.learner.helpers) as an nstzoo encoder file."""
    from nstzoo.weights import save_safetensors

    torch.manual_seed(seed)
    model = ToyEncoder().eval()
    return save_safetensors(path, model.state_dict(), kind="encoder", name="toy",
                            config={"encoder": "toy", "options": model.export_config(), "step": 0})


def tiny_profile(path: Path, steps: int = 2) -> Path:
    """A profile that trains the toy encoder for ``steps`` steps on generated 32 px images.

    ``neat`` stands for ``reinhard`` and the held-out ``cast`` for ``patch-wct`` (both weight-free).
    """
    profile = {
        "name": "tiny",
        "description": "tiny test profile",
        "stand_ins": {"neat": "reinhard", "cast": "patch-wct"},
        "held_out": ["cast"],
        "data": {"generate": True, "train_contents": 6, "train_styles": 8, "test_contents": 3, "test_styles": 4,
                 "image_size": 32, "real_photos": False},
        "testset": {"styles": 4, "contents": 3, "size": 32, "batch_size": 16},
        "train": {"steps": steps, "batch_size": 4, "chunk_size": 8, "amp": False, "checkpoint_every": 1,
                  "data": {"workers": 0}, "synth": {"size": 32}, "encoder": {"name": "toy", "options": {}}},
    }
    path.write_text(yaml.safe_dump(profile))
    return path


def experiment_configs(folder: Path, names: dict[str, dict]) -> list[Path]:
    """One experiment fragment per ``{name: fragment}``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fragment in names.items():
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(fragment))
        paths.append(path)
    return paths
