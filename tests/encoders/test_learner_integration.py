"""The new encoders through the real learner: ``aladin`` trains (its reconstruction reported as the auxiliary
loss) and exports; a training-free floor is refused with a clear error."""

from __future__ import annotations

import json

import pytest
import torch

from nstzoo.encoders import aladin, color_hist
from nstzoo.errors import ConfigError
from nstzoo.learner.config import build_train_config
from nstzoo.learner.trainer import Trainer
from nstzoo.registry import Registry, reset_registry
from nstzoo.weights import load_encoder

ALADIN_S = {"backbone": "small", "widths": [8, 16, 32], "size": 32, "proj_hidden": 32, "embed_dim": 16}


@pytest.fixture
def folders(tmp_path):
    from nstzoo.data.generate import generate_folder

    registry = Registry()  # installed plugins (the reinhard and patch-wct stylizers) ...
    for module, name in ((aladin, "aladin"), (color_hist, "color-hist")):
        if registry.pm.get_plugin(name) is None:  # ... plus these, until the package is reinstalled
            assert registry.register_plugin(module, name), registry.errors
    reset_registry(registry)
    content, style = tmp_path / "content", tmp_path / "style"
    generate_folder("content", 6, 32, 0, content)
    generate_folder("style", 6, 32, 1, style)
    return content, style


def config(tmp_path, folders, name: str, options: dict, steps: int = 3):
    content, style = folders
    return build_train_config([], [], {
        "out": str(tmp_path / name), "steps": steps, "batch_size": 4, "chunk_size": 3, "seed": 1, "amp": False,
        "checkpoint_every": steps, "encoder.name": name, "encoder.options": options,
        "synth.stylizers": "reinhard,patch-wct", "synth.size": 32, "data.content": [str(content)],
        "data.style": [str(style)], "data.workers": 0})


def test_aladin_trains_with_its_reconstruction_and_exports(tmp_path, folders):
    exported = Trainer(config(tmp_path, folders, "aladin", ALADIN_S), log=lambda m: None).run()
    records = [json.loads(line) for line in (tmp_path / "aladin" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    assert all(r["auxiliary_loss"] is not None and 0 < r["auxiliary_loss"] < 1 for r in records), records
    model = load_encoder(exported)
    assert isinstance(model, aladin.Aladin) and model.export_config()["random_init"] is True
    with torch.no_grad():
        emb = model(torch.rand(2, 3, 40, 40))
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_a_training_free_floor_is_refused(tmp_path, folders):
    with pytest.raises(ConfigError, match="no trainable parameters"):
        Trainer(config(tmp_path, folders, "color-hist", {"bins": 4}), log=lambda m: None).run()
