"""AdaAttN: strict import of the released layout, parity with the released forward pass, the contract."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nstzoo.errors import ConfigError, WeightsError
from nstzoo.nn.vgg import random_official_vgg_state
from nstzoo.registry import Registry
from nstzoo.stylizers import adaattn
from nstzoo.weights import import_official, load_stylizer
from tests.stylizers import reference_ops as ref

OFFICIAL_SEED = 6666  # AdaAttNModel.seed at test time


# ----------------------------------------------------------------------------- official layout (written
# out independently of the module, from Huage001/AdaAttN models/networks.py)
def _block(gen: torch.Generator, in_planes: int, key_planes: int) -> dict[str, torch.Tensor]:
    out = {}
    # Keys std K^-0.75 keeps the attention logits O(1): neither uniform nor one-hot.
    for name, (planes, std) in {"f": (key_planes, key_planes ** -0.75), "g": (key_planes, key_planes ** -0.75),
                                "h": (in_planes, None)}.items():
        for p, t in ref.random_conv(gen, planes, planes, 1, std).items():
            out[f"{name}.{p}"] = t
    return out


def official_states(seed: int = 11) -> dict[str, dict[str, torch.Tensor]]:
    """Random tensors in each released file's key layout and shapes, keyed by file name."""
    gen = torch.Generator().manual_seed(seed)
    transformer = {**{f"attn_adain_4_1.{k}": v for k, v in _block(gen, 512, 64 + 128 + 256 + 512).items()},
                   **{f"attn_adain_5_1.{k}": v for k, v in _block(gen, 512, 64 + 128 + 256 + 512 + 512).items()},
                   **{f"merge_conv.{k}": v for k, v in ref.random_conv(gen, 512, 512, 3).items()}}
    decoder = {f"decoder_layer_1.1.{k}": v for k, v in ref.random_conv(gen, 256, 512, 3).items()}
    for slot, (cout, cin) in {1: (256, 512), 4: (256, 256), 7: (256, 256), 10: (128, 256), 14: (128, 128),
                              17: (64, 128), 21: (64, 64), 24: (3, 64)}.items():
        decoder.update({f"decoder_layer_2.{slot}.{k}": v for k, v in ref.random_conv(gen, cout, cin, 3).items()})
    return {"vgg_normalised.pth": random_official_vgg_state(gen),
            "latest_net_decoder.pth": decoder,
            "latest_net_transformer.pth": transformer,
            "latest_net_adaattn_3.pth": _block(gen, 256, 64 + 128 + 256)}


def write_official(folder: Path, edit=None) -> list[Path]:
    paths = []
    for filename, state in official_states().items():
        if edit is not None:
            state = edit(filename, dict(state))
        torch.save(state, folder / filename)
        paths.append(folder / filename)
    return paths


# ----------------------------------------------------------------------------- the released forward pass
def _released_adaattn(state, prefix, content, style, content_key, style_key, max_sample):
    """networks.AdaAttN.forward, with the seed handling of AdaAttNModel at test time."""
    f = F.conv2d(content_key, state[prefix + "f.weight"], state[prefix + "f.bias"])
    g = F.conv2d(style_key, state[prefix + "g.weight"], state[prefix + "g.bias"])
    h = F.conv2d(style, state[prefix + "h.weight"], state[prefix + "h.bias"])
    b, _, h_g, w_g = g.shape
    g = g.view(b, -1, w_g * h_g)
    if w_g * h_g > max_sample:
        with torch.random.fork_rng():
            torch.manual_seed(OFFICIAL_SEED)
            index = torch.randperm(w_g * h_g)[:max_sample]
        g = g[:, :, index]
        style_flat = h.view(b, -1, w_g * h_g)[:, :, index].transpose(1, 2)
    else:
        style_flat = h.view(b, -1, w_g * h_g).transpose(1, 2)
    b, _, hh, ww = f.shape
    f = f.view(b, -1, ww * hh).permute(0, 2, 1)
    s = torch.softmax(torch.bmm(f, g), dim=-1)
    mean = torch.bmm(s, style_flat)
    std = torch.sqrt(torch.relu(torch.bmm(s, style_flat ** 2) - mean ** 2))
    mean = mean.view(b, hh, ww, -1).permute(0, 3, 1, 2)
    std = std.view(b, hh, ww, -1).permute(0, 3, 1, 2)
    return std * ref.mean_variance_norm(content) + mean


def _get_key(feats, last):
    h, w = feats[last].shape[-2:]
    parts = [ref.mean_variance_norm(F.interpolate(feats[i], (h, w))) for i in range(last)]
    return torch.cat(parts + [ref.mean_variance_norm(feats[last])], dim=1)


def released_forward(states, content, style, max_sample_3=64 * 64, max_sample_45=256 * 256):
    """AdaAttNModel.forward with --shallow_layer --skip_connection_3, from raw released tensors."""
    vgg, tr = states["vgg_normalised.pth"], states["latest_net_transformer.pth"]
    dec, a3 = states["latest_net_decoder.pth"], states["latest_net_adaattn_3.pth"]
    c, s = ref.vgg_relus(vgg, content), ref.vgg_relus(vgg, style)
    skip = _released_adaattn(a3, "", c[2], s[2], _get_key(c, 2), _get_key(s, 2), max_sample_3)
    a4 = _released_adaattn(tr, "attn_adain_4_1.", c[3], s[3], _get_key(c, 3), _get_key(s, 3), max_sample_45)
    a5 = _released_adaattn(tr, "attn_adain_5_1.", c[4], s[4], _get_key(c, 4), _get_key(s, 4), max_sample_45)
    cs = ref.conv(a4 + F.interpolate(a5, scale_factor=2, mode="nearest"), tr, "merge_conv")
    x = F.interpolate(F.relu(ref.conv(cs, dec, "decoder_layer_1.1")), scale_factor=2, mode="nearest")
    x = torch.cat((x, skip), dim=1)
    for slot in (1, 4, 7, 10, 14, 17, 21):
        x = F.relu(ref.conv(x, dec, f"decoder_layer_2.{slot}"))
        if slot in (10, 17):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
    return ref.conv(x, dec, "decoder_layer_2.24")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry(load_entrypoints=False)
    assert reg.register_plugin(adaattn, "adaattn")
    return reg


@pytest.fixture(scope="module")
def imported(tmp_path_factory, registry) -> Path:
    folder = tmp_path_factory.mktemp("adaattn")
    files = write_official(folder)
    return import_official(registry.stylizer("adaattn"), list(reversed(files)), out=folder / "adaattn.safetensors")


@pytest.fixture(scope="module")
def model(imported, registry) -> torch.nn.Module:
    return load_stylizer("adaattn", weights=imported, registry=registry)


# ----------------------------------------------------------------------------- parity
def _with_caps(model, max_sample_3, max_sample_45, chunk_elements):
    model.adaattn_3.max_sample = max_sample_3
    for block in (model.transformer.attn_adain_4_1, model.transformer.attn_adain_5_1):
        block.max_sample = max_sample_45
    for block in (model.adaattn_3, model.transformer.attn_adain_4_1, model.transformer.attn_adain_5_1):
        block.chunk_elements = chunk_elements
    return model


def _to_double(states):
    return {name: {k: v.double() for k, v in state.items()} for name, state in states.items()}


def test_matches_the_released_forward_pass_in_fp32(model):
    gen = torch.Generator().manual_seed(3)
    content, style = torch.rand(2, 3, 48, 64, generator=gen), torch.rand(2, 3, 64, 48, generator=gen)
    with torch.no_grad():
        ours = model.stylize_padded(content, style)
        clamped = model(content, style)
    expected = released_forward(official_states(), content, style)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clamped, expected.clamp(0, 1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("caps", [(64 * 64, 256 * 256, adaattn.ATTENTION_CHUNK), (100, 20, 50)],
                         ids=["released caps", "sampled and chunked"])
def test_matches_the_released_forward_pass_exactly_in_fp64(caps, imported, registry):
    # The style has 16x12 = 192 relu3_1 and 8x6 = 48 relu4_1 positions: small caps force the released
    # random subsampling, and a small chunk forces chunked attention. Chunking reorders float sums,
    # which fp32 turns into ~1e-5 noise through this deep net, so the comparison runs in fp64 where
    # any algorithmic difference (wrong positions sampled, wrong rows) would still show.
    model = _with_caps(load_stylizer("adaattn", weights=imported, registry=registry), *caps).double()
    gen = torch.Generator().manual_seed(4)
    content = torch.rand(2, 3, 48, 64, generator=gen, dtype=torch.float64)
    style = torch.rand(2, 3, 64, 48, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ours = model.stylize_padded(content, style)
    expected = released_forward(_to_double(official_states()), content, style, caps[0], caps[1])
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_the_stylize_engine_path_is_the_released_computation(dtype, tol, imported, registry):
    # ``nstzoo stylize`` calls stylize_controlled, whose attention moments come from one fused
    # scaled_dot_product_attention call instead of the released bmm/softmax/bmm: the same numbers
    # (fp64: to rounding; fp32: summation order), including the sampled path (small caps).
    model = _with_caps(load_stylizer("adaattn", weights=imported, registry=registry), 60, 20, 500).to(dtype)
    gen = torch.Generator().manual_seed(9)
    content = torch.rand(2, 3, 48, 64, generator=gen, dtype=dtype)
    style = torch.rand(2, 3, 64, 48, generator=gen, dtype=dtype)
    with torch.no_grad():
        engine = model.stylize_controlled(content, [style])
    expected = released_forward({k: {n: t.to(dtype) for n, t in v.items()} for k, v in official_states().items()},
                                content, style, 60, 20).clamp(0, 1)
    torch.testing.assert_close(engine, expected, atol=tol, rtol=tol)


def test_sampling_draws_the_released_permutation_without_touching_the_global_rng():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    index = adaattn.official_sample_index(5000, 64, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(OFFICIAL_SEED)
    assert torch.equal(index, torch.randperm(5000)[:64])


def test_parameter_count_and_key_layout(model, imported):
    assert sum(p.numel() for p in model.parameters()) == 12_944_972 + 468_096 + 9_066_752 + 4_095_043
    state = model.state_dict()
    assert state["adaattn_3.f.weight"].shape == (448, 448, 1, 1)
    assert state["transformer.attn_adain_5_1.g.weight"].shape == (1472, 1472, 1, 1)
    assert state["decoder.decoder_layer_2.1.weight"].shape == (256, 512, 3, 3)
    # Imported tensors land where the released code puts them (not merely somewhere with that shape).
    raw = official_states()
    torch.testing.assert_close(state["decoder.decoder_layer_2.17.weight"],
                               raw["latest_net_decoder.pth"]["decoder_layer_2.17.weight"])
    torch.testing.assert_close(state["encoder.42.bias"], raw["vgg_normalised.pth"]["42.bias"])


# ----------------------------------------------------------------------------- the stylizer contract
@pytest.mark.parametrize("batch,content_size,style_size", [(2, (37, 53), (45, 29)), (1, (32, 32), (64, 40))])
def test_contract_any_size(batch, content_size, style_size, model):
    gen = torch.Generator().manual_seed(batch)
    content = torch.rand(batch, 3, *content_size, generator=gen)
    style = torch.rand(batch, 3, *style_size, generator=gen)
    with torch.no_grad():
        out, again = model(content, style), model(content, style)
    assert out.shape == content.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, again)
    assert out.std() > 0, "the output should not be a constant image"


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-4), (torch.float64, 1e-10)])
def test_batched_equals_one_by_one(dtype, tol, imported, registry):
    # fp32: batched and single convolutions sum in different orders (~4e-5 here after ~40 layers
    # of random weights; well under 1/255); fp64 shows that nothing but rounding differs. Small caps
    # make the sampled path part of the check.
    model = _with_caps(load_stylizer("adaattn", weights=imported, registry=registry), 60, 20, 500).to(dtype)
    gen = torch.Generator().manual_seed(7)
    content = torch.rand(3, 3, 37, 53, generator=gen, dtype=dtype)
    style = torch.rand(3, 3, 45, 29, generator=gen, dtype=dtype)
    with torch.no_grad():
        batched = model(content, style)
        single = torch.cat([model(content[i:i + 1], style[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=tol, rtol=tol)
    assert not torch.allclose(batched[0], batched[1]), "different inputs should give different outputs"


def test_caps_attention_tokens_and_returns_the_input_size(imported, registry):
    model = load_stylizer("adaattn", weights=imported, registry=registry, max_tokens=24)
    seen = []
    model.encoder[0].register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 96, 144), torch.rand(2, 3, 128, 128))
    assert out.shape == (2, 3, 96, 144) and out.min() >= 0 and out.max() <= 1
    (content_h, content_w), (style_h, style_w) = seen
    assert content_h % 16 == 0 and content_w % 16 == 0
    assert (content_h // 8) * (content_w // 8) <= 24
    assert abs(content_w / content_h - 1.5) < 0.1
    assert -(-style_h // 8) * -(-style_w // 8) <= 24


def test_tiny_inputs_are_upsampled_to_the_deepest_layer(model):
    with torch.no_grad():
        out = model(torch.rand(2, 3, 12, 20), torch.rand(2, 3, 9, 7))
    assert out.shape == (2, 3, 12, 20) and torch.isfinite(out).all()


def test_max_tokens_is_validated():
    with pytest.raises(ConfigError, match="max_tokens"):
        adaattn.AdaAttNStylizer(max_tokens=0)


# ----------------------------------------------------------------------------- strict import
def test_import_accepts_files_in_any_order_and_with_a_module_prefix(tmp_path, registry):
    files = write_official(tmp_path)
    importer = registry.stylizer("adaattn").import_official
    reference = importer(files)
    dp = tmp_path / "dp"
    dp.mkdir()
    prefixed = write_official(dp, lambda f, s: {f"module.{k}": v for k, v in s.items()} if "transformer" in f else s)
    for order in (files[::-1], files[2:] + files[:2], prefixed):
        state = importer(order)
        assert sorted(state) == sorted(reference)
        assert all(torch.equal(state[k], reference[k]) for k in reference)


DAMAGE = [
    ("latest_net_transformer.pth", "attn_adain_5_1.g.bias"),
    ("latest_net_adaattn_3.pth", "h.weight"),
    ("latest_net_decoder.pth", "decoder_layer_2.21.weight"),
    ("vgg_normalised.pth", "42.weight"),
]


@pytest.mark.parametrize("target_file,key", DAMAGE)
@pytest.mark.parametrize("damage", ["missing", "unexpected"])
def test_wrong_or_missing_key_is_a_weights_error_naming_it(target_file, key, damage, tmp_path, registry):
    def edit(filename, state):
        if filename == target_file:
            tensor = state.pop(key)
            if damage == "unexpected":
                state[key + "_renamed"] = tensor
        return state

    files = write_official(tmp_path, edit)
    with pytest.raises(WeightsError, match=key.replace(".", r"\.") + ("_renamed" if damage == "unexpected" else "")):
        import_official(registry.stylizer("adaattn"), files, out=tmp_path / "x.safetensors")


def test_a_checkpoint_without_shallow_keys_is_refused_by_shape(tmp_path, registry):
    # --shallow_layer off: attn_adain_4_1's keys are 512 channels, not 960.
    def edit(filename, state):
        if "transformer" in filename:
            state["attn_adain_4_1.f.weight"] = torch.zeros(512, 512, 1, 1)
        return state

    files = write_official(tmp_path, edit)
    with pytest.raises(WeightsError, match=r"attn_adain_4_1\.f\.weight.*\(512, 512, 1, 1\)") as info:
        import_official(registry.stylizer("adaattn"), files, out=tmp_path / "x.safetensors")
    assert "shallow_layer" in str(info.value)


def test_missing_file_is_named(tmp_path, registry):
    files = [f for f in write_official(tmp_path) if "adaattn_3" not in f.name]
    with pytest.raises(WeightsError, match="latest_net_adaattn_3.pth"):
        import_official(registry.stylizer("adaattn"), files, out=tmp_path / "x.safetensors")


def test_spec_and_entry_point():
    spec = adaattn.SPEC
    assert spec.name == "adaattn" and spec.import_official is adaattn.import_official
    assert "ICCV 2021" in spec.paper and "Huage001/AdaAttN" in spec.weights_source
    assert spec.weight_files[0] == "vgg_normalised.pth" and len(spec.weight_files) == 4
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["nstzoo"]["adaattn"] == "nstzoo.stylizers.adaattn"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_does_not_synchronise_and_survives_autocast(imported, registry):
    model = load_stylizer("adaattn", weights=imported, registry=registry, device="cuda")
    for block in (model.adaattn_3, model.transformer.attn_adain_4_1):
        block.max_sample = 40  # exercise the sampled path (index copied from the host)
    gen = torch.Generator().manual_seed(5)
    content = torch.rand(2, 3, 37, 53, generator=gen).cuda()
    style = torch.rand(2, 3, 45, 29, generator=gen).cuda()
    with torch.no_grad():
        model(content, style)  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = model(content, style)
            with torch.autocast("cuda", dtype=torch.float16):
                half = model(content, style)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    cpu = load_stylizer("adaattn", weights=imported, registry=registry)
    for block in (cpu.adaattn_3, cpu.transformer.attn_adain_4_1):
        block.max_sample = 40
    with torch.no_grad():
        expected = cpu(content.cpu(), style.cpu())
    torch.testing.assert_close(out.cpu(), expected, atol=2e-3, rtol=2e-3)
    assert torch.isfinite(half).all() and (half.float() - out).abs().mean() < 0.05
