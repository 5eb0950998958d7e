"""patch-wct above its working size: the engine path keeps the content's full-resolution detail."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nstzoo.stylizers.patch_wct import PatchWCT


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    low = F.interpolate(torch.rand(2, 3, 4, 4, generator=g), size=(128, 96), mode="bilinear", align_corners=False)
    checker = ((torch.arange(128)[:, None] + torch.arange(96)[None, :]) % 2).float()  # 1-px detail
    content = 0.25 + 0.5 * low[:1] + 0.1 * checker
    style = 0.2 + 0.6 * F.interpolate(torch.rand(1, 3, 5, 5, generator=g), size=(64, 64), mode="bilinear")
    return content, style


def test_detail_above_the_working_size_is_added_back():
    model = PatchWCT(working_size=32)
    content, style = _images()
    with torch.no_grad():
        resized = model(content, style)  # the working-size result resized up: no 1-px detail
        kept = model.stylize_controlled(content, [style])
        small = model._resize_longer(content)
        up_small = F.interpolate(small, size=content.shape[-2:], mode="bilinear", align_corners=False)
    assert 0 < float(resized.min()) and float(resized.max()) < 1  # nothing clamped: the identity below is exact
    torch.testing.assert_close(kept, (resized + content - up_small).clamp(0, 1), atol=1e-5, rtol=0)

    def detail(x):  # the 1-px checkerboard's amplitude
        return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean())

    assert detail(kept) > 0.8 * detail(content) and detail(resized) < 0.3 * detail(content)


def test_alpha_scales_the_change_and_zero_returns_the_content():
    model = PatchWCT(working_size=32)
    content, style = _images()
    with torch.no_grad():
        full = model.stylize_controlled(content, [style], alpha=1.0)
        half = model.stylize_controlled(content, [style], alpha=0.5)
        none = model.stylize_controlled(content, [style], alpha=0.0)
    torch.testing.assert_close(none, content, atol=1e-6, rtol=0)
    torch.testing.assert_close(half, (content + full) / 2, atol=1e-5, rtol=0)
