"""The aladin encoder (ALADIN, paper 002): code layout, backbones, weights, training signal, export.

Tiny models: ALADIN-S with widths 8/16/32 at 32 px, and the real-width normalised VGG-19 (to relu4_1)
at 32 px.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from nstzoo.encoders import aladin
from nstzoo.encoders.aladin import DEFAULT_CONFIG, Aladin
from nstzoo.errors import ConfigError, WeightsError
from nstzoo.learner.accumulate import accumulated_step, split_into_chunks
from nstzoo.learner.loss import SupConLoss
from nstzoo.nn.stats import mean_std
from nstzoo.nn.vgg import random_official_vgg_state

from .helpers import assert_unit_rows, export_round_trip, images, registry_with

WIDTHS = [8, 16, 32]


def small(**overrides) -> Aladin:
    config = dict(backbone="small", widths=WIDTHS, size=32, proj_hidden=32, embed_dim=16)
    return Aladin(**{**config, **overrides})


def tiny_vgg(**overrides) -> Aladin:
    config = dict(size=32, proj_hidden=32, embed_dim=16, random_init=True)
    return Aladin(**{**config, **overrides})


def test_small_code_is_the_adain_statistics_of_every_layer():
    torch.manual_seed(0)
    enc = small().eval()
    assert enc.code_dim == 2 * sum(WIDTHS) and enc.input_sizes == (32,)
    assert Aladin(backbone="small").code_dim == 896  # the paper's 2 x (64 + 128 + 256)
    x = images(3)
    with torch.no_grad():
        squashed = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
        code = enc.style_code(squashed)
        feats = enc.style_encoder.features(squashed)
        out = enc(x)
    want = []
    for f in feats:
        mean, std = mean_std(f)
        want += [mean.flatten(1), std.flatten(1)]
    torch.testing.assert_close(code, torch.cat(want, 1))
    assert [f.shape[-1] for f in feats] == [32, 16, 8]
    assert out.shape == (3, 16)
    assert_unit_rows(out)
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_without_projection_the_normalised_code_is_the_embedding():
    torch.manual_seed(0)
    enc = small(projection=False).eval()
    assert enc.embed_dim == enc.code_dim and isinstance(enc.head, torch.nn.Identity)
    x = images(2, size=(32, 32))
    with torch.no_grad():
        torch.testing.assert_close(enc(x), torch.nn.functional.normalize(enc.style_code(x), dim=1))


def test_an_items_embedding_and_loss_do_not_depend_on_its_batch():
    torch.manual_seed(1)
    enc = small().train()
    x, other = images(4, seed=3), images(4, seed=4)
    with torch.no_grad():
        whole = enc(x)
        mixed = enc(torch.cat([x[:2], other[2:]]))
        _, aux_whole = enc.training_forward(x)
        aux_parts = torch.stack([enc.training_forward(x[i:i + 1])[1] for i in range(4)]).mean()
    torch.testing.assert_close(whole[:2], mixed[:2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(aux_whole, aux_parts)  # the chunk mean is the mean of per-item terms


def test_vgg_backbone_loads_vgg_normalised_strictly(tmp_path):
    official = random_official_vgg_state(torch.Generator().manual_seed(2))
    path = tmp_path / "vgg_normalised.pth"
    torch.save(official, path)
    enc = tiny_vgg(vgg_weights=str(path), random_init=False)
    assert enc.code_dim == 2 * (64 + 128 + 256 + 512)
    torch.testing.assert_close(enc.style_encoder.net[2].weight, official["2.weight"], rtol=0, atol=0)
    with torch.no_grad():
        assert_unit_rows(enc(images(2)))
    bad = dict(official, **{"99.weight": torch.zeros(1)})
    torch.save(bad, path)
    with pytest.raises(WeightsError, match=r"99\.weight"):
        tiny_vgg(vgg_weights=str(path), random_init=False)


def test_missing_vgg_weights_say_what_to_pass(tmp_path):
    with pytest.raises(WeightsError) as err:
        tiny_vgg(random_init=False)
    text = str(err.value)
    assert "vgg_weights" in text and "vgg_normalised.pth" in text and "random_init" in text
    with pytest.raises(WeightsError, match="not found"):
        tiny_vgg(vgg_weights=str(tmp_path / "absent.pth"), random_init=False)
    small(random_init=False)  # ALADIN-S is trained from scratch: no weights needed


@pytest.mark.parametrize("options, match", [
    ({"backbone": "resnet"}, "unknown backbone"),
    ({"size": 36}, "multiple of 8"),
    ({"backbone": "small", "freeze_vgg": True}, "freeze_vgg"),
    ({"rec_weight": -1.0}, "rec_weight"),
    ({"backbone": "small", "widths": []}, "widths"),
    ({"embed_dim": 0}, "embed_dim"),
])
def test_invalid_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        tiny_vgg(**options)


def test_reconstruction_trains_the_style_encoder_unless_frozen():
    torch.manual_seed(0)
    enc = small()
    x = images(2, size=(32, 32))
    x_in, x_rec = enc.reconstruct(x)
    assert x_rec.shape == x_in.shape == (2, 3, 32, 32)
    _, aux = enc.training_forward(x)
    assert aux.dim() == 0
    torch.testing.assert_close(aux, 1e-2 * (x_rec - x_in).abs().mean())
    aux.backward()  # the reconstruction alone must reach the style code, through the decoder's AdaIN
    grad = enc.style_encoder.stages[0][1].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert enc.head[0].weight.grad is None  # ... but not the projection head

    frozen_enc = tiny_vgg(freeze_vgg=True)
    frozen = frozen_enc.frozen_features(x)
    assert frozen.shape == (2, frozen_enc.code_dim) and not frozen.requires_grad
    emb, aux = frozen_enc.training_forward(x, frozen)
    with torch.no_grad():
        torch.testing.assert_close(frozen_enc(x, frozen), frozen_enc(x))
    (emb.sum() + aux).backward()
    assert all(p.grad is None for p in frozen_enc.style_encoder.parameters())
    assert frozen_enc.decoder.convs[0][1].weight.grad is not None
    assert tiny_vgg().frozen_features(x) is None  # fine-tuned VGG: nothing to precompute


def test_a_few_learner_steps_reduce_contrastive_and_reconstruction_losses():
    # The learner's own accumulation (two passes, chunked) with SupCon over style ids plus ALADIN's
    # auxiliary term: both must go down within a few Adam steps on 4 styles x 2 images.
    torch.manual_seed(0)
    enc = small().train()
    g = torch.Generator().manual_seed(1)
    styles = torch.rand(4, 3, 4, 4, generator=g).repeat_interleave(2, 0)
    x = (torch.nn.functional.interpolate(styles, size=(32, 32), mode="bilinear")
         + 0.1 * torch.rand(8, 3, 32, 32, generator=g)).clamp(0, 1)
    labels = torch.arange(4).repeat_interleave(2)
    loss_fn = SupConLoss(temperature=0.1)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    history = []
    for _ in range(10):
        opt.zero_grad(set_to_none=True)
        chunks = split_into_chunks(x, 4)
        chunks = [(c, enc.frozen_features(c)) for c in chunks]
        result = accumulated_step(enc, chunks, lambda e: loss_fn(e, labels), forward=lambda m, c: m(*c),
                                  training_forward=lambda m, c: m.training_forward(*c))
        opt.step()
        history.append((float(result.loss), float(result.auxiliary)))
    (con0, rec0), (con1, rec1) = history[0], history[-1]
    assert rec1 < 0.9 * rec0, history
    assert con1 < con0 - 0.05, history


def test_export_round_trip(tmp_path):
    reg = registry_with(aladin)
    for enc in (small(), tiny_vgg(freeze_vgg=True)):
        with torch.no_grad():  # move every parameter off its init so a fresh module cannot match
            for p in enc.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        enc.eval()
        loaded = export_round_trip(enc, "aladin", tmp_path / "aladin.safetensors", reg)
        assert isinstance(loaded, Aladin) and loaded.export_config() == enc.export_config()
        x = images(3)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), enc(x), rtol=0, atol=0)


def test_registered_defaults_match_the_factory_signature():
    params = inspect.signature(Aladin).parameters
    defaults = {k: (list(p.default) if k == "widths" else p.default) for k, p in params.items()}
    assert defaults == DEFAULT_CONFIG
    specs = []
    aladin.register_encoders(register=specs.append)
    assert [s.name for s in specs] == ["aladin"] and specs[0].default_config == DEFAULT_CONFIG
