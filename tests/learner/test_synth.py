"""The batch synthesizer: labels and grouping."""

from __future__ import annotations

import torch
from torch import nn

from nstzoo.learner.synth import BatchSynthesizer, encoder_batch, method_histogram


class Tint(nn.Module):
    """A per-sample deterministic stylizer whose output reveals which style it was given."""

    def __init__(self, gain: float):
        super().__init__()
        self.gain = gain

    def forward(self, content, style):
        return (0.5 * content + self.gain * style.mean((2, 3), keepdim=True)).clamp(0, 1)


def make(seed=0):
    return BatchSynthesizer({"a": Tint(0.2), "b": Tint(0.4), "c": Tint(0.1)}, {"c": 2.0}, seed=seed)


def test_each_style_exactly_twice_with_different_contents():
    synth = make()
    contents, styles = torch.rand(8, 3, 16, 16), torch.rand(4, 3, 12, 12)
    batch = synth(contents, styles, torch.arange(10, 18), torch.tensor([5, 6, 7, 8]), step=3)
    assert batch.stylized.shape == (8, 3, 16, 16)
    assert batch.style_id.tolist() == [5, 5, 6, 6, 7, 7, 8, 8]
    assert torch.bincount(batch.style_id).max() == 2
    pairs = batch.content_id.view(-1, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    images, labels, is_source = encoder_batch(batch)
    assert images.shape == (12, 3, 16, 16) and labels.tolist()[8:] == [5, 6, 7, 8]
    assert is_source.tolist() == [False] * 8 + [True] * 4
    assert sum(method_histogram(batch).values()) == 8


def test_grouped_stylization_equals_per_sample_calls():
    synth = make()
    contents, styles = torch.rand(8, 3, 16, 16), torch.rand(4, 3, 16, 16)
    batch = synth(contents, styles, torch.arange(8), torch.arange(4), step=1)
    for i in range(8):
        name = batch.method_names[int(batch.method[i])]
        expected = synth.stylizers[name](contents[i:i + 1], styles[i // 2:i // 2 + 1])
        torch.testing.assert_close(batch.stylized[i:i + 1], expected, rtol=0, atol=0)


def test_method_draws_follow_weights_and_are_reproducible_per_step():
    synth = make(seed=7)
    assert torch.equal(synth.draw_methods(64, 5), synth.draw_methods(64, 5))
    assert not torch.equal(synth.draw_methods(64, 5), synth.draw_methods(64, 6))
    counts = torch.bincount(synth.draw_methods(20000, 0), minlength=3).float() / 20000
    torch.testing.assert_close(counts, torch.tensor([0.25, 0.25, 0.5]), atol=0.02, rtol=0)


def test_rejects_wrong_style_count():
    import pytest

    with pytest.raises(ValueError, match="B/2 styles"):
        make()(torch.rand(6, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.arange(6), torch.arange(2))
