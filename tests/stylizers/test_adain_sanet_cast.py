"""AdaIN, SANet and CAST: official-layout import, strict loading, and the stylizer contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nstzoo.errors import ConfigError, WeightsError
from nstzoo.nn.checkpoints import decoder_keys
from nstzoo.nn.decoder import adain_decoder
from nstzoo.nn.vgg import random_official_vgg_state
from nstzoo.stylizers import adain, cast, sanet
from nstzoo.registry import Registry
from nstzoo.weights import import_official, load_stylizer

PLUGINS = {"adain": adain, "sanet": sanet, "cast": cast}
PARAMS = {"adain": 3_505_740 + 3_505_219, "sanet": 12_944_972 + 4_461_056 + 3_505_219,
          "cast": 3_505_740 + 3_505_219}


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry(load_entrypoints=False)
    for name, module in PLUGINS.items():
        assert reg.register_plugin(module, name)
    return reg


def _decoder_state() -> dict[str, torch.Tensor]:
    state = adain_decoder().state_dict()
    assert sorted(state) == sorted(decoder_keys())
    return state


def official_states(name: str) -> dict[str, dict[str, torch.Tensor]]:
    """Random tensors in each official file's exact key layout and shapes, keyed by file name."""
    torch.manual_seed({"adain": 1, "sanet": 2, "cast": 3}[name])
    if name == "adain":
        return {"vgg_normalised.pth": random_official_vgg_state(), "decoder.pth": _decoder_state()}
    if name == "sanet":
        transformer = sanet.SANetTransform().state_dict()
        return {"vgg_normalised.pth": random_official_vgg_state(), "decoder_iter_500000.pth": _decoder_state(),
                "transformer_iter_500000.pth": transformer}
    encoder = cast.CASTEncoder().state_dict()
    return {"latest_net_AE.pth": encoder,
            "latest_net_Dec_B.pth": {f"decoder.{k}": v for k, v in _decoder_state().items()}}


def write_official(name: str, folder: Path, edit=None) -> list[Path]:
    paths = []
    for filename, state in official_states(name).items():
        if edit is not None:
            state = edit(filename, dict(state))
        path = folder / filename
        torch.save(state, path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def imported(tmp_path_factory, registry) -> dict[str, Path]:
    out = {}
    for name in PLUGINS:
        folder = tmp_path_factory.mktemp(name)
        files = write_official(name, folder)
        out[name] = import_official(registry.stylizer(name), list(reversed(files)), out=folder / f"{name}.safetensors")
    return out


@pytest.fixture(scope="module")
def models(imported, registry) -> dict[str, torch.nn.Module]:
    return {name: load_stylizer(name, weights=path, registry=registry) for name, path in imported.items()}


@pytest.mark.parametrize("name", list(PLUGINS))
def test_parameter_counts_match_the_reference(name, models):
    assert sum(p.numel() for p in models[name].parameters()) == PARAMS[name]


SIZES = [(1, (32, 32), (32, 32)), (3, (40, 56), (24, 48)), (2, (37, 29), (50, 33))]


@pytest.mark.parametrize("name", list(PLUGINS))
@pytest.mark.parametrize("batch,content_size,style_size", SIZES)
def test_stylize_contract(name, batch, content_size, style_size, models):
    model = models[name]
    gen = torch.Generator().manual_seed(batch)
    content = torch.rand(batch, 3, *content_size, generator=gen)
    style = torch.rand(batch, 3, *style_size, generator=gen)
    with torch.no_grad():
        out = model(content, style)
        again = model(content, style)
    assert out.shape == (batch, 3, *content_size)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, again)
    assert out.std() > 0, "the output should not be a constant image"


@pytest.mark.parametrize("name", list(PLUGINS))
def test_batched_equals_one_by_one(name, models):
    gen = torch.Generator().manual_seed(7)
    content, style = torch.rand(3, 3, 40, 24, generator=gen), torch.rand(3, 3, 32, 40, generator=gen)
    model = models[name]
    with torch.no_grad():
        batched = model(content, style)
        single = torch.cat([model(content[i:i + 1], style[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(PLUGINS))
def test_import_accepts_files_in_any_order(name, tmp_path, registry):
    files = write_official(name, tmp_path)
    importer = registry.stylizer(name).import_official
    reference = importer(list(reversed(files)))
    for order in (files, files[1:] + files[:1]):
        state = importer(order)
        assert sorted(state) == sorted(reference)
        assert all(torch.equal(state[k], reference[k]) for k in reference)


# (file to damage, key to rename) -> the key the error must name.
DAMAGE = {
    "adain": ("decoder.pth", "11.weight"),
    "sanet": ("transformer_iter_500000.pth", "sanet5_1.g.bias"),
    "cast": ("latest_net_AE.pth", "enc_3.5.weight"),
}


@pytest.mark.parametrize("name", list(PLUGINS))
@pytest.mark.parametrize("damage", ["missing", "unexpected"])
def test_wrong_or_missing_key_is_a_weights_error_naming_it(name, damage, tmp_path, registry):
    target_file, key = DAMAGE[name]

    def edit(filename, state):
        if filename == target_file:
            tensor = state.pop(key)
            if damage == "unexpected":
                state[key + "_renamed"] = tensor
        return state

    files = write_official(name, tmp_path, edit)
    with pytest.raises(WeightsError, match=key.replace(".", r"\.") + ("_renamed" if damage == "unexpected" else "")):
        import_official(registry.stylizer(name), files, out=tmp_path / "x.safetensors")


def test_missing_file_is_named(tmp_path, registry):
    files = write_official("sanet", tmp_path)
    with pytest.raises(WeightsError, match="transformer_iter_500000.pth"):
        import_official(registry.stylizer("sanet"), [f for f in files if "transformer" not in f.name],
                        out=tmp_path / "x.safetensors")


def test_vgg_file_with_a_foreign_key_is_refused(tmp_path, registry):
    files = write_official("adain", tmp_path, lambda f, s: {**s, "fc.weight": torch.zeros(2)} if "vgg" in f else s)
    with pytest.raises(WeightsError, match="fc.weight"):
        import_official(registry.stylizer("adain"), files, out=tmp_path / "x.safetensors")


def test_cast_refuses_decoder_a_and_maps_encoder_slots(tmp_path, registry, models):
    files = write_official("cast", tmp_path)
    dec_a = tmp_path / "latest_net_Dec_A.pth"
    files[1].rename(dec_a)
    with pytest.raises(WeightsError, match="Dec_B"):
        import_official(registry.stylizer("cast"), [files[0], dec_a], out=tmp_path / "x.safetensors")
    # Official enc_4.11 is flat VGG slot 29 (relu4_1's conv); it must land there.
    ae = official_states("cast")["latest_net_AE.pth"]
    torch.testing.assert_close(models["cast"].encoder.enc_4[11].weight, ae["enc_4.11.weight"])


def test_cast_works_in_minus_one_to_one(models):
    model = models["cast"]
    content, style = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        raw = model.decoder(cast.adain(model.encoder(content * 2 - 1), model.encoder(style * 2 - 1)))
        torch.testing.assert_close(model(content, style), ((raw + 1) / 2).clamp(0, 1))


def test_adain_alpha_zero_ignores_the_style_and_alpha_is_validated(imported, registry):
    model = load_stylizer("adain", weights=imported["adain"], registry=registry, alpha=0.0)
    content = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(content, torch.rand(1, 3, 32, 32)), model(content, torch.rand(1, 3, 16, 40)))
    with pytest.raises(ConfigError, match="alpha"):
        adain.AdaINStylizer(alpha=2.0)


def test_sanet_caps_attention_tokens_and_returns_the_input_size(imported, registry):
    model = load_stylizer("sanet", weights=imported["sanet"], registry=registry, max_tokens=24)
    seen = []
    model.encoder[0].register_forward_pre_hook(  # the first conv sees every image
        lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 96, 144), torch.rand(2, 3, 128, 128))
    assert out.shape == (2, 3, 96, 144) and out.min() >= 0 and out.max() <= 1
    (content_h, content_w), (style_h, style_w) = seen
    assert content_h % 16 == 0 and content_w % 16 == 0
    assert (content_h // 8) * (content_w // 8) <= 24
    assert abs(content_w / content_h - 1.5) < 0.1
    assert -(-style_h // 8) * -(-style_w // 8) <= 24


def test_sanet_handles_inputs_smaller_than_its_deepest_layer(models):
    with torch.no_grad():
        out = models["sanet"](torch.rand(2, 3, 12, 20), torch.rand(2, 3, 9, 7))
    assert out.shape == (2, 3, 12, 20) and torch.isfinite(out).all()
