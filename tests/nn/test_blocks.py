"""The shared VGG/AdaIN building blocks: layouts, parameter counts, moments, sizing."""

from __future__ import annotations

import pytest
import torch

from nstzoo.errors import WeightsError
from nstzoo.nn import (TAPS, NormalisedVGG19, adain, adain_decoder, attention_working_size, mean_std,
                       mean_variance_norm, pad_to_multiple)
from nstzoo.nn.vgg import random_official_vgg_state


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_vgg_parameter_counts_match_the_official_file():
    assert n_params(NormalisedVGG19("all")) == 20_024_396
    assert n_params(NormalisedVGG19("relu4_1")) == 3_505_740
    assert n_params(NormalisedVGG19("relu5_1")) == 12_944_972
    assert len(NormalisedVGG19("all")) == 53


def test_decoder_layout_and_count():
    decoder = adain_decoder()
    assert n_params(decoder) == 3_505_219
    assert sorted({k.split(".")[0] for k in decoder.state_dict()}, key=int) == \
        ["1", "5", "8", "11", "14", "18", "21", "25", "28"]
    out = decoder(torch.rand(2, 512, 3, 5))
    assert out.shape == (2, 3, 24, 40)


def test_vgg_loads_official_layout_and_taps_have_expected_shapes():
    vgg = NormalisedVGG19("all")
    vgg.load_state_dict(random_official_vgg_state(torch.Generator().manual_seed(0)))
    x = torch.rand(2, 3, 40, 36)
    relu1, relu3, relu5 = vgg.taps(x, ["relu1_1", "relu3_1", "relu5_1"])
    assert relu1.shape == (2, 64, 40, 36)
    assert relu3.shape == (2, 256, 10, 9)
    assert relu5.shape == (2, 512, 3, 3)  # ceil-mode pooling rounds odd sizes up
    # Taps equal running the slice up to the tap's end slot.
    torch.testing.assert_close(vgg.taps(x, ["relu3_1"])[0], vgg[:TAPS["relu3_1"]](x))


def test_truncated_vgg_refuses_deeper_taps():
    with pytest.raises(ValueError, match="relu5_1"):
        NormalisedVGG19("relu4_1").taps(torch.rand(1, 3, 16, 16), ["relu5_1"])
    with pytest.raises(ValueError, match="relu9_1"):
        NormalisedVGG19("relu9_1")


def test_select_official_keeps_needed_keys_and_refuses_foreign_ones():
    full = random_official_vgg_state()
    needed = NormalisedVGG19.select_official(full, upto="relu4_1")
    truncated = NormalisedVGG19("relu4_1")
    truncated.load_state_dict(needed, strict=True)
    assert set(needed) == set(truncated.state_dict())

    with pytest.raises(WeightsError, match="decoder.1.weight"):
        NormalisedVGG19.select_official({**full, "decoder.1.weight": torch.zeros(1)}, source="x.pth")
    del full["29.bias"]
    with pytest.raises(WeightsError, match=r"29\.bias"):
        NormalisedVGG19.select_official(full, upto="relu4_1")
    # relu1_1 does not need slot 29, so the same incomplete file is fine there.
    assert set(NormalisedVGG19.select_official(full, upto="relu1_1")) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_mean_std_is_unbiased_with_eps_on_variance():
    feat = torch.randn(3, 4, 5, 6) * 2 + 1
    mean, std = mean_std(feat)
    assert mean.shape == std.shape == (3, 4, 1, 1)
    flat = feat.flatten(2)
    torch.testing.assert_close(std.flatten(1), (flat.var(dim=2, unbiased=True) + 1e-5).sqrt())
    torch.testing.assert_close(mean.flatten(1), flat.mean(dim=2))
    assert torch.isfinite(mean_std(torch.rand(1, 2, 1, 1))[1]).all()


def test_adain_transfers_style_moments_per_sample():
    content = torch.randn(2, 8, 6, 7)
    style = torch.randn(2, 8, 9, 4) * torch.tensor([0.5, 3.0]).view(2, 1, 1, 1) + 4
    out = adain(content, style)
    assert out.shape == content.shape
    out_mean, out_std = mean_std(out)
    style_mean, style_std = mean_std(style)
    torch.testing.assert_close(out_mean, style_mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_std, style_std, atol=1e-3, rtol=1e-3)
    normalised = mean_variance_norm(content)
    torch.testing.assert_close(normalised.flatten(2).mean(2), torch.zeros(2, 8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("h,w,m", [(17, 30, 16), (16, 16, 16), (5, 3, 16), (33, 9, 8)])
def test_pad_to_multiple_pads_and_crops_back(h, w, m):
    x = torch.rand(2, 3, h, w)
    padded, size = pad_to_multiple(x, m)
    assert size == (h, w)
    assert padded.shape[-2] % m == 0 and padded.shape[-1] % m == 0
    assert padded.shape[-2] - h < m and padded.shape[-1] - w < m
    assert torch.equal(padded[..., :h, :w], x)


def test_attention_working_size_caps_tokens_and_keeps_aspect():
    assert attention_working_size(256, 256, 4096) == (256, 256)
    h2, w2 = attention_working_size(2048, 1024, 4096)
    assert -(-h2 // 8) * -(-w2 // 8) <= 4096
    assert abs(h2 / w2 - 2.0) < 0.05
    assert h2 * w2 > 0.9 * 4096 * 64  # not needlessly small
    with pytest.raises(ValueError):
        attention_working_size(10, 10, 0)
