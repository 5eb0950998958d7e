"""EFDM: the Sort-Matching op, strict import of the released layout, parity, and the stylizer contract."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
import torch

from nstzoo.errors import ConfigError, WeightsError
from nstzoo.nn.efdm import exact_feature_distribution_matching as efdm
from nstzoo.nn.efdm import sorted_quantiles
from nstzoo.nn.vgg import random_official_vgg_state
from nstzoo.registry import Registry
from nstzoo.stylizers import efdm as efdm_plugin
from nstzoo.weights import import_official, load_stylizer
from tests.stylizers import reference_ops as ref


def released_efdm(content_feat: torch.Tensor, style_feat: torch.Tensor, stable: bool = False) -> torch.Tensor:
    """YBZh/EFDM ArbitraryStyleTransfer/function.py ``exact_feature_distribution_matching``.

    ``stable=True`` fixes the order of tied content values (the released unstable sort leaves it to
    the sort kernel; ReLU features tie at zero), which is what the module does.
    """
    assert content_feat.size() == style_feat.size()
    b, c, w, h = content_feat.shape
    _, index_content = torch.sort(content_feat.view(b, c, -1), stable=stable)
    value_style, _ = torch.sort(style_feat.view(b, c, -1), stable=stable)
    inverse_index = index_content.argsort(-1)
    new = content_feat.view(b, c, -1) + (value_style.gather(-1, inverse_index) - content_feat.view(b, c, -1).detach())
    return new.view(b, c, w, h)


# ----------------------------------------------------------------------------- the op
def test_equal_sizes_give_exactly_the_style_values_in_the_content_order():
    gen = torch.Generator().manual_seed(0)
    content, style = torch.randn(2, 5, 6, 7, generator=gen), torch.randn(2, 5, 7, 6, generator=gen) * 3 + 1
    out = efdm(content, style)
    assert out.shape == content.shape
    assert torch.equal(out.flatten(2).sort(-1).values, style.flatten(2).sort(-1).values)
    assert torch.equal(out.flatten(2).argsort(-1), content.flatten(2).argsort(-1))
    # The released op asserts equal shapes; only the values matter, so give it the style reshaped.
    torch.testing.assert_close(out, released_efdm(content, style.reshape(content.shape)), atol=1e-6, rtol=0)


def test_ties_are_ranked_by_position_like_a_stable_released_sort():
    gen = torch.Generator().manual_seed(1)
    content = torch.relu(torch.randn(2, 4, 8, 8, generator=gen)).round()  # many exact ties
    style = torch.randn(2, 4, 8, 8, generator=gen)
    torch.testing.assert_close(efdm(content, style), released_efdm(content, style, stable=True), atol=1e-6, rtol=0)
    assert torch.equal(efdm(content, style).flatten(2).sort(-1).values, style.flatten(2).sort(-1).values)


def test_unequal_sizes_resample_the_style_quantiles_to_the_content_count():
    gen = torch.Generator().manual_seed(2)
    content, style = torch.randn(1, 3, 5, 4, generator=gen), torch.randn(1, 3, 9, 7, generator=gen)
    out = efdm(content, style)
    assert out.shape == content.shape
    got = out.flatten(2).sort(-1).values
    ordered = style.flatten(2).sort(-1).values
    expected = torch.stack([torch.tensor([float(torch.quantile(row, q)) for q in torch.linspace(0, 1, 20)])
                            for row in ordered[0]])[None]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # linear quantiles of the style
    assert torch.equal(got[..., 0], ordered[..., 0]) and torch.equal(got[..., -1], ordered[..., -1])
    assert torch.equal(out.flatten(2).argsort(-1), content.flatten(2).argsort(-1))
    assert torch.equal(sorted_quantiles(style.flatten(2), 63), ordered)


def test_gradient_is_identity_for_the_content_and_rank_matched_for_the_style():
    gen = torch.Generator().manual_seed(3)
    content = torch.randn(2, 3, 4, 5, generator=gen, requires_grad=True)
    style = torch.randn(2, 3, 5, 4, generator=gen, requires_grad=True)
    upstream = torch.randn(2, 3, 4, 5, generator=gen)
    (efdm(content, style) * upstream).sum().backward()
    torch.testing.assert_close(content.grad, upstream, atol=0, rtol=0)
    # The style value of rank k went to the content position of rank k, so it gets that gradient.
    expected = torch.zeros(2, 3, 20)
    expected.scatter_(-1, style.detach().flatten(2).argsort(-1),
                      upstream.flatten(2).gather(-1, content.detach().flatten(2).argsort(-1)))
    torch.testing.assert_close(style.grad.flatten(2), expected, atol=0, rtol=0)
    # Same gradients as the released formula.
    c2, s2 = content.detach().clone().requires_grad_(), style.detach().clone().requires_grad_()
    (released_efdm(c2, s2.reshape(c2.shape)) * upstream).sum().backward()
    torch.testing.assert_close(c2.grad, content.grad)
    torch.testing.assert_close(s2.grad, style.grad)


def test_op_is_per_item_and_validates_shapes():
    gen = torch.Generator().manual_seed(4)
    content, style = torch.relu(torch.randn(3, 4, 6, 6, generator=gen)), torch.randn(3, 4, 5, 9, generator=gen)
    single = torch.cat([efdm(content[i:i + 1], style[i:i + 1]) for i in range(3)])
    assert torch.equal(efdm(content, style), single)
    with pytest.raises(ValueError, match="batch and channels"):
        efdm(content, style[:, :2])
    with pytest.raises(ValueError, match=r"\[B,C,H,W\]"):
        efdm(content[0], style[0])


# ----------------------------------------------------------------------------- official files
def official_states(seed: int = 21) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return {"vgg_normalised.pth": random_official_vgg_state(gen),
            "decoder_iter_160000.pth.tar": ref.random_adain_decoder_state(gen)}


def write_official(folder: Path, edit=None) -> list[Path]:
    paths = []
    for filename, state in official_states().items():
        if edit is not None:
            state = edit(filename, dict(state))
        torch.save(state, folder / filename)
        paths.append(folder / filename)
    return paths


def released_forward(states, content, style, alpha=1.0):
    """test.py ``style_transfer`` (style_type efdm): vgg[:31], efdm, alpha blend, decoder."""
    vgg, dec = states["vgg_normalised.pth"], states["decoder_iter_160000.pth.tar"]
    content_f = ref.vgg_relus(vgg, content, stages=4)[-1]
    style_f = ref.vgg_relus(vgg, style, stages=4)[-1]
    feat = released_efdm(content_f, style_f, stable=True)
    return ref.adain_decoder(dec, feat * alpha + content_f * (1 - alpha))


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry(load_entrypoints=False)
    assert reg.register_plugin(efdm_plugin, "efdm")
    return reg


@pytest.fixture(scope="module")
def imported(tmp_path_factory, registry) -> Path:
    folder = tmp_path_factory.mktemp("efdm")
    files = write_official(folder)
    return import_official(registry.stylizer("efdm"), list(reversed(files)), out=folder / "efdm.safetensors")


@pytest.fixture(scope="module")
def model(imported, registry) -> torch.nn.Module:
    return load_stylizer("efdm", weights=imported, registry=registry)


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_matches_the_released_forward_pass(alpha, imported, registry):
    model = load_stylizer("efdm", weights=imported, registry=registry, alpha=alpha)
    gen = torch.Generator().manual_seed(5)
    # The released code needs equal sizes (its test crops both to a square); 64x48 is a multiple of 8.
    content, style = torch.rand(2, 3, 64, 48, generator=gen), torch.rand(2, 3, 64, 48, generator=gen)
    with torch.no_grad():
        ours = model.stylize_unclamped(content, style)
        clamped = model(content, style)
    expected = released_forward(official_states(), content, style, alpha)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clamped, expected.clamp(0, 1), atol=1e-5, rtol=1e-5)


def test_parameter_count_and_alpha_validation(model):
    assert sum(p.numel() for p in model.parameters()) == 3_505_740 + 3_505_219
    with pytest.raises(ConfigError, match="alpha"):
        efdm_plugin.EFDMStylizer(alpha=1.5)


def test_alpha_zero_ignores_the_style(imported, registry):
    model = load_stylizer("efdm", weights=imported, registry=registry, alpha=0.0)
    content = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(content, torch.rand(1, 3, 32, 32)), model(content, torch.rand(1, 3, 48, 24)))


# ----------------------------------------------------------------------------- the stylizer contract
@pytest.mark.parametrize("batch,content_size,style_size", [(2, (37, 53), (45, 29)), (1, (32, 32), (64, 40)),
                                                           (2, (9, 13), (50, 33))])
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_equals_one_by_one(dtype, model):
    model = model if dtype == torch.float32 else copy.deepcopy(model).double()
    gen = torch.Generator().manual_seed(7)
    content = torch.rand(3, 3, 37, 53, generator=gen, dtype=dtype)
    style = torch.rand(3, 3, 45, 29, generator=gen, dtype=dtype)
    with torch.no_grad():
        batched = model(content, style)
        single = torch.cat([model(content[i:i + 1], style[i:i + 1]) for i in range(3)])
        feats = model.encoder(content)
        feats_single = torch.cat([model.encoder(content[i:i + 1]) for i in range(3)])
    assert not torch.allclose(batched[0], batched[1]), "different inputs should give different outputs"
    if dtype == torch.float64:
        torch.testing.assert_close(batched, single, atol=1e-10, rtol=1e-10)
        return
    # fp32: batched and single convolutions round differently (~1e-6); EFDM is rank-based, so a
    # near-tie that rounding flips swaps two neighbouring style quantiles. With 35 positions per
    # channel (a 37x53 image at relu4_1) quantiles are far apart, hence a looser bound here and
    # the exact check in fp64 above.
    torch.testing.assert_close(feats, feats_single, atol=1e-5, rtol=1e-5)
    assert (batched - single).abs().max() < 2e-2 and (batched - single).abs().mean() < 3e-4


# ----------------------------------------------------------------------------- strict import
def test_import_accepts_files_in_any_order(tmp_path, registry):
    files = write_official(tmp_path)
    importer = registry.stylizer("efdm").import_official
    reference = importer(files)
    state = importer(files[::-1])
    assert sorted(state) == sorted(reference) and all(torch.equal(state[k], reference[k]) for k in reference)
    assert "encoder.29.weight" in state and "encoder.32.weight" not in state  # VGG kept up to relu4_1


@pytest.mark.parametrize("target_file,key", [("decoder_iter_160000.pth.tar", "21.bias"),
                                             ("vgg_normalised.pth", "16.weight")])
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
        import_official(registry.stylizer("efdm"), files, out=tmp_path / "x.safetensors")


def test_missing_file_is_named(tmp_path, registry):
    files = [f for f in write_official(tmp_path) if "vgg" in f.name]
    with pytest.raises(WeightsError, match=r"decoder_iter_160000\.pth\.tar"):
        import_official(registry.stylizer("efdm"), files, out=tmp_path / "x.safetensors")


def test_spec_and_entry_point():
    spec = efdm_plugin.SPEC
    assert spec.name == "efdm" and spec.import_official is efdm_plugin.import_official
    assert "CVPR 2022" in spec.paper and "YBZh/EFDM" in spec.weights_source
    assert spec.default_options == {"alpha": 1.0}
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["nstzoo"]["efdm"] == "nstzoo.stylizers.efdm"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_does_not_synchronise(imported, registry):
    model = load_stylizer("efdm", weights=imported, registry=registry, device="cuda")
    gen = torch.Generator().manual_seed(5)
    content = torch.rand(2, 3, 37, 53, generator=gen).cuda()
    style = torch.rand(2, 3, 45, 29, generator=gen).cuda()
    with torch.no_grad():
        model(content, style)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = model(content, style)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    cpu = load_stylizer("efdm", weights=imported, registry=registry)
    with torch.no_grad():
        torch.testing.assert_close(out.cpu(), cpu(content.cpu(), style.cpu()), atol=2e-3, rtol=2e-3)
