"""nstzoo.nn.moments: the four per-channel moments of ALADIN-NST §3.1 against scipy / numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from nstzoo.nn.moments import channel_moments, feature_moments


def _reference(x: torch.Tensor) -> np.ndarray:
    """[B, 4C] from numpy/scipy on float64: mean, population std, skew, excess kurtosis (bias=True)."""
    a = x.double().numpy()
    b, c = a.shape[:2]
    flat = a.reshape(b, c, -1)
    return np.concatenate([
        flat.mean(-1),
        flat.std(-1, ddof=0),
        stats.skew(flat, axis=-1, bias=True),
        stats.kurtosis(flat, axis=-1, fisher=True, bias=True),
    ], axis=1)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 5, 7, 3)])
def test_matches_scipy_on_skewed_data(shape):
    g = torch.Generator().manual_seed(0)
    # Exponential and squared-normal channels have large, known-sign skew and kurtosis, so a wrong
    # power, sign or normaliser shows up (a plain normal would give ~0 for both and hide it).
    x = torch.empty(shape).exponential_(generator=g) * 3.0 + 1.5
    x[:, ::2] = torch.randn(shape, generator=g)[:, ::2] ** 2 - 0.7
    got = feature_moments(x)
    assert got.shape == (shape[0], 4 * shape[1]) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), _reference(x), rtol=1e-4, atol=1e-5)
    skew = channel_moments(x).skew
    assert (skew > 0.3).all(), "exponential / chi-square channels are right-skewed"


def test_channels_last_and_named_fields_agree():
    x = torch.randn(2, 4, 6, 5)
    m = channel_moments(x)
    cl = feature_moments(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, torch.cat([m.mean, m.std, m.skew, m.kurt], 1))
    torch.testing.assert_close(m.mean, x.mean(dim=(2, 3)))


def test_constant_channel_is_finite_with_documented_values():
    x = torch.randn(2, 3, 5, 5, requires_grad=False)
    x[0, 1] = 0.0            # dead ReLU channel
    x[1, 2] = 123.25         # constant, non-zero: float32 rounding leaves a tiny spurious spread
    x.requires_grad_(True)
    m = channel_moments(x)
    for field in m:
        assert torch.isfinite(field).all()
    for b, c in ((0, 1), (1, 2)):
        assert m.std[b, c] == 0 and m.skew[b, c] == 0 and m.kurt[b, c] == 0
    assert m.mean[1, 2].item() == pytest.approx(123.25)
    # A non-constant channel next to it is unaffected.
    np.testing.assert_allclose(m.kurt[0, 0].item(), stats.kurtosis(x[0, 0].detach().double().flatten().numpy()),
                               rtol=1e-4, atol=1e-5)
    torch.cat(m, 1).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_gradients_match_finite_differences():
    x = (torch.randn(1, 2, 3, 4, dtype=torch.float64) ** 2).requires_grad_(True)
    assert torch.autograd.gradcheck(feature_moments, (x,))


def test_one_by_one_map_is_constant():
    m = channel_moments(torch.randn(3, 4, 1, 1))
    assert (m.std == 0).all() and (m.skew == 0).all() and (m.kurt == 0).all()


def test_bf16_autocast_input_gives_float32():
    x = torch.randn(2, 3, 16, 16).exponential_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = torch.nn.functional.conv2d(x, torch.eye(3).view(3, 3, 1, 1))
        assert feats.dtype == torch.bfloat16
        got = feature_moments(feats)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    # Same moments as the float32 computation on the bf16-rounded values.
    np.testing.assert_allclose(got.numpy(), _reference(feats.float()), rtol=1e-3, atol=1e-4)


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\[B,C,H,W\]"):
        feature_moments(torch.randn(2, 3, 4))
