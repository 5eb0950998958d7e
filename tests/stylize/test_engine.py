"""The engine checks every output with check_output (one pass over a valid output), and splits CPU batches."""

from __future__ import annotations

import pytest
import torch

from nstzoo.errors import StylizerOutputError
from nstzoo.stylize import Stylizer


class Fixed(torch.nn.Module):
    """Returns a prepared output whatever the inputs."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output

    def forward(self, content, style):
        return self.output


@pytest.mark.parametrize("value, ok", [(0.5, True), (1.0005, True), (-0.0005, True), (1.01, False),
                                       (-0.01, False), (float("nan"), False), (float("inf"), False),
                                       (float("-inf"), False)])
def test_the_guard_accepts_and_refuses_what_check_output_does(value, ok):
    from nstzoo.stylize import Controls

    output = torch.full((1, 3, 4, 5), 0.5)
    output[0, 1, 2, 3] = value
    stylizer = Stylizer("fixed", Fixed(output), channels_last=False)
    content = torch.rand(1, 3, 4, 5)
    if ok:
        result = stylizer.call(content, [content], Controls())
        assert float(result.min()) >= 0 and float(result.max()) <= 1
    else:
        with pytest.raises(StylizerOutputError, match="stylizer 'fixed'"):
            stylizer.call(content, [content], Controls())


def test_a_wrong_shape_is_refused_by_check_output():
    from nstzoo.stylize import Controls

    stylizer = Stylizer("fixed", Fixed(torch.full((1, 3, 4, 4), 0.5)), channels_last=False)
    with pytest.raises(StylizerOutputError, match=r"expected \[1, 3, 4, 5\]"):
        stylizer.call(torch.rand(1, 3, 4, 5), [torch.rand(1, 3, 4, 5)], Controls())


class Recorder(torch.nn.Module):
    """A per-pixel stylizer (content mixed with the style's mean colour) that records its batch sizes."""

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, content, style):
        self.batches.append(content.shape[0])
        return (0.5 * content + 0.5 * style.mean(dim=(2, 3), keepdim=True)).clamp(0, 1)


def test_cpu_batches_are_split_by_pixels_per_call_in_order():
    from nstzoo.stylize import Controls

    content, style = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    expected = Recorder()(content, style)
    module = Recorder()
    stylizer = Stylizer("recorder", module, channels_last=False, batch_pixels=3 * 16 * 16)
    out = stylizer.stylize(content, [style], Controls())
    assert module.batches == [3, 3, 2]  # each call sees its own slice of the styles too
    torch.testing.assert_close(out, expected)
    # A module may state its own figure; by default one 512x512 image's worth goes per call.
    assert Stylizer("recorder", Recorder(), channels_last=False).batch_pixels == 512 * 512
