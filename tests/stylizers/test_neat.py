"""NeAT (nstzoo re-implementation): stylizing contract, edit path, training with every loss term."""

import json

import numpy as np
import pytest
import torch

from nstzoo.stylizer_training import train_stylizer
from nstzoo.errors import ConfigError, WeightsError
from nstzoo.stylizers import neat
from nstzoo.registry import Registry
from nstzoo.weights import load_stylizer
from tests.learner.helpers import sinusoid_image_folder




@pytest.fixture(scope="module")
def registry():
    reg = Registry(load_entrypoints=False)
    reg.register_plugin(neat, "neat")
    return reg


def test_spec_says_weights_come_from_training(registry):
    spec = registry.stylizer("neat")
    assert spec.import_official is None and spec.weight_files == () and spec.needs_weights
    assert "re-implementation" in spec.summary and "stylizers train neat" in spec.weights_source
    with pytest.raises(WeightsError, match="stylizers train neat"):
        load_stylizer("neat", weights="/nonexistent/neat.safetensors", registry=registry)


def test_stylizes_any_size_batched_deterministic():
    torch.manual_seed(0)
    model = neat.NeATStylizer(stages=1).eval()
    for (hc, wc), (hs, ws) in [((32, 32), (32, 32)), ((37, 50), (45, 33))]:
        content, style = torch.rand(2, 3, hc, wc), torch.rand(2, 3, hs, ws)
        with torch.no_grad():
            out = model(content, style)
            single = torch.cat([model(content[i:i + 1], style[i:i + 1]) for i in range(2)])
            assert torch.equal(out, model(content, style))
        assert out.shape == (2, 3, hc, wc) and out.min() >= 0 and out.max() <= 1
        assert torch.allclose(out, single, atol=1e-5)


def test_output_is_content_plus_upsampled_delta_at_full_resolution():
    torch.manual_seed(0)
    model = neat.NeATStylizer(levels=["relu4_1"], stages=1, max_tokens=4).eval()
    torch.nn.init.zeros_(model.decoder[28].weight)
    torch.nn.init.zeros_(model.decoder[28].bias)
    content = torch.rand(1, 3, 96, 80)
    with torch.no_grad():
        assert torch.equal(model(content, torch.rand(1, 3, 40, 40)), content)  # zero delta: content untouched
        model.decoder[28].bias.fill_(0.1)
        out = model(content, torch.rand(1, 3, 40, 40))
    assert torch.allclose(out, (content + 0.1).clamp(0, 1), atol=1e-6)


def test_gaussian_blur_strength_per_image():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 20, 20)
    blurred = neat.gaussian_blur(images, torch.tensor([0.0, 1.0, 2.0]), 2.0)
    assert torch.allclose(blurred[0], images[0], atol=1e-6)
    spread = [blurred[i].std().item() for i in range(3)]
    assert spread[0] > spread[1] > spread[2]
    assert torch.allclose(blurred.mean(dim=(1, 2, 3)), images.mean(dim=(1, 2, 3)), atol=0.02)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="relu2_1"):
        neat.NeATStylizer(levels=["relu2_1", "relu4_1"])
    with pytest.raises(ConfigError, match="relu4_1"):
        neat.NeATStylizer(levels=["relu5_1"])


def _config(tmp_path, out, steps):
    return {"content": str(tmp_path / "content"), "style": str(tmp_path / "style"),
            "out": str(tmp_path / out), "steps": steps, "batch_size": 2, "size": 32, "lr": 1e-4,
            "random_init_vgg": True, "seed": 5, "recipe": {"patch_size": 8, "patches": 4}, "options": {"stages": 1}}


def test_training_all_terms_finite_decreasing_resumable_exported(tmp_path, registry):
    sinusoid_image_folder(tmp_path / "content", 10)
    sinusoid_image_folder(tmp_path / "style", 11)
    exported = train_stylizer(neat.SPEC, _config(tmp_path, "full", 5))
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        for term in ("pama_content", "pama_remd", "pama_moment", "pama_color", "contrast_style",
                     "contrast_content", "adversarial", "identity_gram", "discriminator"):
            assert 0 < r[term] < float("inf"), term
    totals = [r["total"] for r in records]
    assert np.mean(totals[-2:]) < np.mean(totals[:2])

    train_stylizer(neat.SPEC, _config(tmp_path, "split", 2))
    resumed = train_stylizer(neat.SPEC, _config(tmp_path, "split", 5), resume=True)
    full_model = load_stylizer("neat", weights=exported, registry=registry)
    split_model = load_stylizer("neat", weights=resumed, registry=registry)
    assert full_model.stages == 1  # the options travel with the export
    for key, value in full_model.state_dict().items():
        assert torch.equal(value, split_model.state_dict()[key]), key
    with torch.no_grad():
        out = full_model(torch.rand(1, 3, 36, 44), torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 3, 36, 44) and torch.isfinite(out).all()


def test_blur_switch_off_trains(tmp_path):
    sinusoid_image_folder(tmp_path / "content", 10)
    sinusoid_image_folder(tmp_path / "style", 11)
    cfg = _config(tmp_path, "noblur", 1)
    path = train_stylizer(neat.SPEC, {**cfg, "recipe": {**cfg["recipe"], "blur": False}})
    assert path.is_file()
