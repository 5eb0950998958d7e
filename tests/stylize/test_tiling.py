"""Any resolution: windows cover the image, blending is exact for a per-pixel map, seams stay invisible,
and the memory budget decides when to tile."""

from __future__ import annotations

import pytest
import torch

from nstzoo.registry import get_registry
from nstzoo.stylize import Controls, Stylizer, parse_memory, seam_ratio, stylize_tiled, tile_starts
from nstzoo.stylize.tiling import feather, tile_side_for_budget

from .helpers import lively, smooth

# Seam bound: gradient energy on window edges over that elsewhere, for the tiled output, relative to the
# same figure for the untiled output of the same stylizer at the same columns (the decoder's 8-px upsampling
# grid gives the untiled image its own structure at multiples of 8). A hard seam scores > 2 (checked below).
SEAM_BOUND = 1.25


@pytest.mark.parametrize("length, tile, overlap", [(100, 100, 10), (101, 40, 8), (1000, 256, 64), (5, 4, 1)])
def test_windows_cover_every_pixel_with_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    covered = torch.zeros(length)
    for start in starts:
        covered[start:start + tile] += 1
    assert bool((covered >= 1).all())
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap  # neighbours share at least the blending ramp


def test_feather_ramps_only_at_interior_edges():
    assert torch.equal(feather(0, 8, 3, 8, torch.device("cpu")), torch.ones(8))
    inner = feather(4, 8, 3, 20, torch.device("cpu"))
    assert inner[:3].tolist() == pytest.approx([0.25, 0.5, 0.75])
    assert inner[-3:].tolist() == pytest.approx([0.75, 0.5, 0.25])


def test_a_per_pixel_map_comes_back_exactly():
    image = smooth(5, 70, 90)
    calls = []

    def run(windows, whole):
        calls.append(windows.shape)
        assert whole.shape[-2:] == image.shape[-2:]  # small images are their own whole view
        return windows.flip(1)  # per pixel, position-independent: blending must reproduce it

    out = stylize_tiled(run, image, tile=32, overlap=8, batch=3)
    torch.testing.assert_close(out, image.flip(1), atol=1e-6, rtol=0)
    assert all(shape[-2:] == (32, 32) for shape in calls) and sum(s[0] for s in calls) == 4 * 3


def test_seam_ratio_detects_a_hard_seam():
    image = smooth(6, 64, 96)

    def stepped(windows, whole):  # every other window brightened, a 1-px blend: visible steps
        offsets = 0.3 * (torch.arange(len(windows)) % 2).view(-1, 1, 1, 1)
        return 0.7 * windows + offsets

    hard = stylize_tiled(stepped, image, tile=32, overlap=1, batch=64)
    assert seam_ratio(hard, 32, 1) > 2.0
    assert seam_ratio(image, 32, 1) < 1.3


@pytest.mark.parametrize("name", ["adain", "sanet"])
def test_tiled_stylization_has_no_visible_seams(name):
    model = lively(name)
    stylizer = Stylizer(name, model, get_registry().stylizer(name).controls, tile=96, overlap=32)
    content, style = smooth(7, 160, 224), smooth(8, 64, 64)
    with torch.inference_mode():
        tiled = stylizer.stylize(content, [style], Controls())
        whole = stylizer.call(content, [style], Controls())
    assert tiled.shape == content.shape
    ratio, baseline = seam_ratio(tiled, 96, 32), seam_ratio(whole, 96, 32)
    assert ratio < SEAM_BOUND * baseline, (name, ratio, baseline)
    # Tiles see the same style, so the tiled image stays close to the one-piece result.
    assert (tiled - whole).abs().mean().item() < 0.05


def test_the_budget_decides_when_to_tile():
    model = lively("adain")
    spec = get_registry().stylizer("adain")
    roomy = Stylizer("adain", model, spec.controls, max_memory=parse_memory("64GiB"))
    tight = Stylizer("adain", model, spec.controls, max_memory=roomy.fixed_bytes(4096**2) + 1200 * 300**2)
    assert roomy.fits(4096 * 4096) and not tight.fits(4096 * 4096)
    assert 128 <= tight.window(4096 * 4096) <= 320
    assert tile_side_for_budget(1000, 1e9, 0) == 960  # sqrt(1e6) = 1000, down to a multiple of 64
    with pytest.raises(Exception, match="--max-memory"):
        parse_memory("lots")
    assert parse_memory("1.5GiB") == int(1.5 * 1024**3) and parse_memory("500MB") == 500_000_000
