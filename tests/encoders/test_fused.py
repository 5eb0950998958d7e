"""fused: weighted concatenation of normalised part embeddings, built through the registry; plus the
entry points every encoder of this package is registered under."""

from __future__ import annotations

import importlib
import inspect
import tomllib
from pathlib import Path

import pytest
import torch

from nstzoo.encoders import aladin, color_hist, fused, vgg_gram
from nstzoo.encoders.fused import DEFAULT_CONFIG, Fused
from nstzoo.errors import ConfigError, UnknownNameError

from .helpers import assert_unit_rows, export_round_trip, images, registry_with

ALADIN_S = {"backbone": "small", "widths": [8, 16, 32], "size": 32, "proj_hidden": 32, "embed_dim": 16}
HIST = {"bins": 4}
GRAM = {"vgg": "normalised-vgg19", "size": 32, "taps": ["relu1_1"], "stat": "mean-std", "random_init": True}


@pytest.fixture
def reg():
    return registry_with(aladin, color_hist, vgg_gram, fused, install=True)


def test_fusion_is_the_weighted_concatenation_of_normalised_parts(reg):
    torch.manual_seed(0)
    enc = Fused(encoders=[{"name": "aladin", "options": ALADIN_S}, {"name": "color-hist", "options": HIST}],
                weights=[1.0, 2.0]).eval()
    assert enc.names == ["aladin", "color-hist"] and enc.embed_dim == 16 + 64 and enc.input_sizes == (32,)
    x, y = images(3, seed=1), images(3, seed=2)
    with torch.no_grad():
        out, other = enc(x), enc(y)
        a, h = enc.parts[0](x), enc.parts[1](x)
        a2, h2 = enc.parts[0](y), enc.parts[1](y)
    assert_unit_rows(out)
    torch.testing.assert_close(out, torch.cat([a, 2 * h], 1) / 5 ** 0.5)
    # The fused cosine is the w^2-weighted mean of the parts' cosines.
    cos = (out * other).sum(1)
    want = ((a * a2).sum(1) + 4 * (h * h2).sum(1)) / 5
    torch.testing.assert_close(cos, want)


def test_training_passes_the_parts_auxiliary_losses_and_frozen_features(reg):
    torch.manual_seed(0)
    enc = Fused(encoders=[{"name": "aladin", "options": ALADIN_S}, {"name": "vgg-gram", "options": GRAM},
                          {"name": "color-hist", "options": HIST}]).train()
    assert enc.trainable and not enc.parts[1].trainable
    x = images(2, size=(32, 32))
    frozen = enc.frozen_features(x)
    assert frozen[0] is None and frozen[2] is None and frozen[1].shape == (2, 128)
    emb, aux = enc.training_forward(x, frozen)
    _, part_aux = enc.parts[0].training_forward(x)
    torch.testing.assert_close(aux, part_aux)
    with torch.no_grad():
        torch.testing.assert_close(enc(x, frozen), enc(x))
        torch.testing.assert_close(emb, enc(x))
    (emb.sum() + aux).backward()
    assert enc.parts[0].head[0].weight.grad is not None
    floors = Fused(encoders=[{"name": "color-hist", "options": HIST}, {"name": "vgg-gram", "options": GRAM}])
    assert not floors.trainable and floors.training_forward(x)[1] is None


def test_export_nests_the_parts_and_round_trips(reg, tmp_path):
    torch.manual_seed(0)
    gram_pca = {**GRAM, "pca_components": 2}
    enc = Fused(encoders=[{"name": "aladin", "options": ALADIN_S}, {"name": "vgg-gram", "options": gram_pca}],
                weights=[1.0, 0.5]).eval()
    enc.parts[1].fit_pca(images(6, seed=5, size=(32, 32)))
    config = enc.export_config()
    assert config == {"encoders": [{"name": "aladin", "options": enc.parts[0].export_config()},
                                   {"name": "vgg-gram", "options": enc.parts[1].export_config()}],
                      "weights": [1.0, 0.5]}
    assert config["encoders"][1]["options"]["random_init"] is True
    loaded = export_round_trip(enc, "fused", tmp_path / "fused.safetensors", reg)
    assert isinstance(loaded, Fused) and loaded.export_config() == config
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), enc(x), rtol=0, atol=0)


@pytest.mark.parametrize("options, error, match", [
    ({}, ConfigError, "two or more"),
    ({"encoders": [{"name": "color-hist"}]}, ConfigError, "two or more"),
    ({"encoders": [{"name": "color-hist"}, {"name": "colour-hist"}]}, UnknownNameError, "colour-hist"),
    ({"encoders": [{"name": "color-hist"}, {"name": "color-hist", "options": {"bin": 3}}]}, ConfigError, "bin"),
    ({"encoders": [{"name": "color-hist"}, {"name": "color-hist", "weights": 2}]}, ConfigError, "unknown key"),
    ({"encoders": [{"name": "color-hist"}, "vgg-gram"]}, ConfigError, r"encoders\[1\]"),
    ({"encoders": [{"name": "color-hist"}, {"name": "color-hist"}], "weights": [1.0]}, ConfigError, "1 weights"),
    ({"encoders": [{"name": "color-hist"}, {"name": "color-hist"}], "weights": [1.0, -1.0]}, ConfigError, "positive"),
])
def test_invalid_options(reg, options, error, match):
    with pytest.raises(error, match=match):
        Fused(**options)


def test_registered_defaults_match_the_factory_signature():
    defaults = {k: p.default for k, p in inspect.signature(Fused).parameters.items()}
    assert defaults == DEFAULT_CONFIG


ENCODERS = {"aladin": "aladin", "aladin-vit": "aladin_vit", "csd": "csd", "color-hist": "color_hist",
            "vgg-gram": "vgg_gram", "fused": "fused"}


def test_each_encoder_has_an_entry_point_whose_module_registers_it():
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    entry_points = tomllib.loads(pyproject.read_text())["project"]["entry-points"]["nstzoo"]
    for name, module_name in ENCODERS.items():
        assert entry_points.get(name) == f"nstzoo.encoders.{module_name}", name
        specs = []
        importlib.import_module(f"nstzoo.encoders.{module_name}").register_encoders(register=specs.append)
        assert [s.name for s in specs] == [name]
        assert specs[0].paper and specs[0].summary
