"""PAMA: official-checkpoint import (strict), stylizing contract, parameter count, training."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nstzoo.stylizer_training import train_stylizer
from nstzoo.errors import ConfigError, WeightsError
from nstzoo.nn.attention import alignment_stage_keys
from nstzoo.nn.checkpoints import decoder_keys
from nstzoo.nn.decoder import adain_decoder
from nstzoo.nn.vgg import random_official_vgg_state
from nstzoo.stylizers import pama
from nstzoo.registry import Registry
from nstzoo.weights import import_official, load_stylizer
from tests.learner.helpers import sinusoid_image_folder


@pytest.fixture(scope="module")
def registry():
    reg = Registry(load_entrypoints=False)
    reg.register_plugin(pama, "pama")
    return reg


def _official_states(seed=0):
    gen = torch.Generator().manual_seed(seed)
    stage = pama.AlignmentStage(512)
    stages = [{k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in stage.state_dict().items()}
              for _ in range(3)]
    decoder = {k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in adain_decoder().state_dict().items()}
    return random_official_vgg_state(gen), decoder, stages


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pama_official")
    vgg, decoder, stages = _official_states()
    torch.save(vgg, folder / "encoder.pth")  # the full 53-slot VGG, keys up to 51 as released
    torch.save(decoder, folder / "decoder.pth")
    for k, stage in enumerate(stages, 1):
        torch.save(stage, folder / f"PAMA{k}.pth")
    return folder, (vgg, decoder, stages)


@pytest.fixture(scope="module")
def imported(official_files, tmp_path_factory):
    folder, _ = official_files
    names = ["PAMA3.pth", "decoder.pth", "PAMA1.pth", "encoder.pth", "PAMA2.pth"]  # any order
    return import_official(pama.SPEC, [folder / n for n in names],
                           out=tmp_path_factory.mktemp("store") / "pama.safetensors")


def test_official_keys_match_the_notes():
    assert len(alignment_stage_keys()) == 24 and "fuse.fuse5x.weight" in alignment_stage_keys()
    assert len(decoder_keys()) == 18


def test_import_maps_every_official_tensor(imported, official_files, registry):
    _, (vgg, decoder, stages) = official_files
    model = load_stylizer("pama", weights=imported, registry=registry)
    state = model.state_dict()
    assert torch.equal(state["encoder.29.weight"], vgg["29.weight"])
    assert torch.equal(state["decoder.28.bias"], decoder["28.bias"])
    for k, stage in enumerate(stages, 1):
        assert torch.equal(state[f"align{k}.fuse.proj1.weight"], stage["fuse.proj1.weight"])
    assert not any(key.startswith("encoder.32") for key in state)  # slots past relu4_1 are dropped


def test_real_width_parameter_count():
    model = pama.PAMAStylizer()
    per_stage = sum(p.numel() for p in model.align1.parameters())
    assert per_stage == 6_313_219
    # VGG to relu4_1 + three stages + AdaIN decoder
    assert sum(p.numel() for p in model.parameters()) == 3_505_740 + 3 * 6_313_219 + 3_505_219


def test_stylizes_any_size_batched_deterministic(imported, registry):
    model = load_stylizer("pama", weights=imported, registry=registry)
    gen = torch.Generator().manual_seed(1)
    for (hc, wc), (hs, ws) in [((32, 32), (32, 32)), ((37, 50), (45, 29)), ((24, 41), (64, 48))]:
        content, style = torch.rand(2, 3, hc, wc, generator=gen), torch.rand(2, 3, hs, ws, generator=gen)
        with torch.no_grad():
            out = model(content, style)
            again = model(content, style)
            single = torch.cat([model(content[i:i + 1], style[i:i + 1]) for i in range(2)])
        assert out.shape == (2, 3, hc, wc)
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, again)
        assert torch.allclose(out, single, atol=1e-5)


def test_attention_working_size_caps_large_inputs():
    model = pama.PAMAStylizer(max_tokens=4).eval()
    seen = []
    model.align1.attn.register_forward_hook(lambda _m, args, _o: seen.append((args[0].shape, args[1].shape)))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 40, 56), torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 3, 40, 56)
    (content_shape, style_shape), = seen
    assert content_shape[2] * content_shape[3] <= 4 and style_shape[2] * style_shape[3] <= 4


def test_wrong_or_missing_key_is_named(official_files, tmp_path):
    folder, (_, decoder, stages) = official_files
    bad = dict(stages[1])
    bad["attn.q.weight"] = bad.pop("attn.f.weight")
    torch.save(bad, tmp_path / "PAMA2.pth")
    files = [folder / n for n in ("encoder.pth", "decoder.pth", "PAMA1.pth", "PAMA3.pth")] + [tmp_path / "PAMA2.pth"]
    with pytest.raises(WeightsError, match=r"attn\.f\.weight") as err:
        pama.import_official(files)
    assert "attn.q.weight" in str(err.value) and "PAMA2.pth" in str(err.value)

    short = {k: v for k, v in decoder.items() if k != "14.bias"}
    torch.save(short, tmp_path / "decoder.pth")
    files = [folder / n for n in ("encoder.pth", "PAMA1.pth", "PAMA2.pth", "PAMA3.pth")] + [tmp_path / "decoder.pth"]
    with pytest.raises(WeightsError, match=r"14\.bias"):
        pama.import_official(files)

    with pytest.raises(WeightsError, match="PAMA3.pth"):
        pama.import_official([folder / n for n in ("encoder.pth", "decoder.pth", "PAMA1.pth", "PAMA2.pth")])


def test_vgg_with_foreign_key_is_refused(official_files, tmp_path):
    folder, (vgg, _, _) = official_files
    torch.save({**vgg, "fc.weight": torch.zeros(2)}, tmp_path / "encoder.pth")
    files = [tmp_path / "encoder.pth"] + [folder / n for n in ("decoder.pth", "PAMA1.pth", "PAMA2.pth", "PAMA3.pth")]
    with pytest.raises(WeightsError, match="fc.weight"):
        pama.import_official(files)


# ----------------------------------------------------------------------------- training


def _config(tmp_path: Path, out: str, steps: int) -> dict:
    return {"content": str(tmp_path / "content"), "style": str(tmp_path / "style"),
            "out": str(tmp_path / out), "steps": steps, "batch_size": 2, "size": 32, "lr": 1e-4,
            "random_init_vgg": True, "seed": 3}


def test_training_decreases_loss_resumes_exactly_and_exports(tmp_path, registry):
    sinusoid_image_folder(tmp_path / "content", 0)
    sinusoid_image_folder(tmp_path / "style", 1)
    exported = train_stylizer(pama.SPEC, _config(tmp_path, "full", 5))
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    for r in records:
        for term in ("content", "remd", "moment", "color"):
            assert all(0 < r[f"stage{k}_{term}"] < float("inf") for k in (1, 2, 3))
        assert r["reconstruction_features"] > 0 and r["reconstruction_pixels"] > 0
    totals = [r["total"] for r in records]
    assert np.mean(totals[-2:]) < np.mean(totals[:2])

    train_stylizer(pama.SPEC, _config(tmp_path, "split", 2))
    resumed = train_stylizer(pama.SPEC, _config(tmp_path, "split", 5), resume=True)
    full_model = load_stylizer("pama", weights=exported, registry=registry)
    split_model = load_stylizer("pama", weights=resumed, registry=registry)
    for key, value in full_model.state_dict().items():
        assert torch.equal(value, split_model.state_dict()[key]), key
    with torch.no_grad():
        out = full_model(torch.rand(1, 3, 40, 36), torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 3, 40, 36) and torch.isfinite(out).all()


def test_training_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="batchsize"):
        train_stylizer(pama.SPEC, {**_config(tmp_path, "x", 1), "batchsize": 2})
    with pytest.raises(ConfigError, match="vgg"):
        train_stylizer(pama.SPEC, {**_config(tmp_path, "x", 1), "random_init_vgg": False})
