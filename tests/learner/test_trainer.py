"""The trainer: exact resume, atomic checkpoints, NaN stop, run files."""

from __future__ import annotations

import json

import pytest
import torch

from nstzoo.learner.config import build_train_config
from nstzoo.errors import ConfigError
from nstzoo.learner.trainer import Trainer
from nstzoo.runs import CHECKPOINT, TrainingDiverged
from tests.learner.helpers import install_toy_registry, make_images


@pytest.fixture
def images(tmp_path):
    install_toy_registry()
    return make_images(tmp_path)


def config(tmp_path, images, out="run", steps=6, **overrides):
    content, style = images
    flags = {"out": str(tmp_path / out), "steps": steps, "batch_size": 4, "chunk_size": 3, "seed": 3,
             "amp": False, "checkpoint_every": 1, "encoder.name": "toy", "synth.stylizers": "reinhard,patch-wct",
             "synth.size": 32, "data.content": [str(content)], "data.style": [str(style)], "data.workers": 0}
    flags.update(overrides)
    return build_train_config([], [], flags)


def test_resume_three_plus_three_equals_six(tmp_path, images):
    straight = Trainer(config(tmp_path, images, "straight"), log=lambda m: None)
    torch.manual_seed(123)  # the run must not depend on the caller's RNG
    straight.run()
    Trainer(config(tmp_path, images, "split", steps=3), log=lambda m: None).run()
    resumed = Trainer(config(tmp_path, images, "split", steps=6), resume=True, log=lambda m: None)
    resumed.run()
    a = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "split" / CHECKPOINT, weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in a["modules"]["model"]:
        torch.testing.assert_close(a["modules"]["model"][key], b["modules"]["model"][key], rtol=0, atol=0)
    losses = lambda run: [json.loads(l)["loss"] for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert losses("straight") == losses("split") and len(losses("split")) == 6


def test_run_files_and_export(tmp_path, images):
    from nstzoo.weights import load_encoder

    exported = Trainer(config(tmp_path, images, steps=2), log=lambda m: None).run()
    run = tmp_path / "run"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["versions"]["torch"] and "reinhard" in meta["plugins"]
    assert "toy" == __import__("yaml").safe_load((run / "config.yaml").read_text())["encoder"]["name"]
    model = load_encoder(exported)
    emb = model(torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_resume_refuses_changed_settings_and_fresh_run_refuses_existing(tmp_path, images):
    Trainer(config(tmp_path, images, steps=1), log=lambda m: None).run()
    with pytest.raises(ConfigError, match="loss.temperature"):
        Trainer(config(tmp_path, images, steps=2, **{"loss.temperature": 0.5}), resume=True, log=lambda m: None).run()
    with pytest.raises(ConfigError, match="is not empty"):
        Trainer(config(tmp_path, images, steps=2), log=lambda m: None).run()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, images, monkeypatch):
    from nstzoo.learner import loss as loss_module

    calls = {"n": 0}
    real_forward = loss_module.SupConLoss.forward

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        value = real_forward(self, *args, **kwargs)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(loss_module.SupConLoss, "forward", poisoned)
    trainer = Trainer(config(tmp_path, images, steps=5), log=lambda m: None)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 3"):
        trainer.run()
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["modules"]["model"].values())


def test_checkpoint_is_atomic(tmp_path, images, monkeypatch):
    trainer = Trainer(config(tmp_path, images, steps=2), log=lambda m: None)
    trainer.run()
    before = (tmp_path / "run" / CHECKPOINT).read_bytes()

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(99)
    assert (tmp_path / "run" / CHECKPOINT).read_bytes() == before
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["last.pt"]


def test_corrupt_training_images_are_skipped_and_counted(tmp_path, images):
    import shutil

    content, style = images
    small = tmp_path / "small_content"  # 2 good + 1 broken: each step's draw of 4 covers all three
    small.mkdir()
    for name in ("content_00000.png", "content_00001.png"):
        shutil.copy(content / name, small / name)
    (small / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.warns(RuntimeWarning, match="broken.png"):
        Trainer(config(tmp_path, (small, style), steps=2), log=lambda m: None).run()
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] >= 1 for r in records] == [True, True]
    assert all(sum(r["methods"].values()) == 4 for r in records)  # the batch was refilled, not shrunk


def test_training_from_shards_equals_training_from_the_same_folders(tmp_path, images):
    """Shards keep the folders' image order, so the same seed draws the same batches and trains the same weights."""
    from nstzoo.data.shards import write_shards

    content, style = images
    write_shards([content], tmp_path / "content-shards", shard_size=3)
    write_shards([style], tmp_path / "style-shards", shard_size=3)
    Trainer(config(tmp_path, images, "folders", steps=2), log=lambda m: None).run()
    Trainer(config(tmp_path, (tmp_path / "content-shards", tmp_path / "style-shards"), "shards", steps=2),
            log=lambda m: None).run()
    a = torch.load(tmp_path / "folders" / CHECKPOINT, weights_only=True)["modules"]["model"]
    b = torch.load(tmp_path / "shards" / CHECKPOINT, weights_only=True)["modules"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
