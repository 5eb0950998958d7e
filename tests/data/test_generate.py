"""The procedural generator: deterministic, in range, varied, and resumable on disk."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

from nstzoo.data import STYLE_FAMILIES, generate_folder, generate_image, load_image, style_family
from nstzoo.errors import DataError

SIZE = 48


def colour_stats(img: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and std: [6]."""
    return torch.cat([img.mean((1, 2)), img.std((1, 2))])


def texture_stats(img: torch.Tensor) -> torch.Tensor:
    """Magnitude-weighted gradient-orientation histogram (8 bins) + high-frequency energy: [9]."""
    g = img.mean(0)
    gx = g[1:-1, 2:] - g[1:-1, :-2]
    gy = g[2:, 1:-1] - g[:-2, 1:-1]
    mag = torch.sqrt(gx**2 + gy**2)
    bins = (torch.atan2(gy, gx) % torch.pi / torch.pi * 8).long().clamp(max=7)
    hist = torch.zeros(8).scatter_add_(0, bins.flatten(), mag.flatten())
    hist = hist / hist.sum()
    blur = F.avg_pool2d(g[None, None], 5, 1, 2, count_include_pad=False)[0, 0]
    hf = ((g - blur) ** 2).mean() / g.var()
    return torch.cat([hist, hf.view(1)])


@pytest.mark.parametrize("kind", ["content", "style"])
def test_deterministic_and_seeded(kind):
    a = generate_image(kind, 3, SIZE, seed=7)
    assert torch.equal(a, generate_image(kind, 3, SIZE, seed=7))
    assert not torch.equal(a, generate_image(kind, 3, SIZE, seed=8))
    assert not torch.equal(a, generate_image(kind, 4, SIZE, seed=7))


@pytest.mark.parametrize("kind", ["content", "style"])
@pytest.mark.parametrize("size", [8, 37, 64])
def test_shape_dtype_range(kind, size):
    for index in range(3):
        img = generate_image(kind, index, size, seed=1)
        assert img.shape == (3, size, size) and img.dtype == torch.float32
        assert img.min() >= 0 and img.max() <= 1
        assert torch.isfinite(img).all()
        assert img.std() > 0.02  # not a flat colour


@pytest.mark.parametrize("family", STYLE_FAMILIES)
def test_every_family_renders(family):
    img = generate_image("style", 0, 40, seed=2, family=family)
    assert img.shape == (3, 40, 40) and 0 <= img.min() and img.max() <= 1
    # A palette of 3-5 colours: the texture uses clearly distinct colours, not one tint.
    assert img.std((1, 2)).max() > 0.05


def test_styles_differ_in_colour_and_texture():
    imgs = [generate_image("style", i, 64, seed=0) for i in range(10)]
    colours = [colour_stats(x) for x in imgs]
    textures = [texture_stats(x) for x in imgs]
    for i, j in itertools.combinations(range(len(imgs)), 2):
        assert (colours[i] - colours[j]).abs().max() > 0.03, (i, j)
        assert (textures[i] - textures[j]).abs().max() > 0.02, (i, j)


def test_family_default_and_forcing():
    for i in range(4):
        fam = style_family(i, seed=5)
        assert fam in STYLE_FAMILIES
        assert torch.equal(generate_image("style", i, 32, 5), generate_image("style", i, 32, 5, family=fam))
    # Forcing a family changes the texture kind: stripes have one dominant gradient
    # orientation, dot patterns none.
    stripes = [texture_stats(generate_image("style", i, 64, seed=s, family="stripes"))[:8].max() for s, i in [(0, 0), (1, 3), (2, 5), (3, 1)]]
    dots = [texture_stats(generate_image("style", i, 64, seed=s, family="dots"))[:8].max() for s, i in [(0, 0), (1, 3), (2, 5), (3, 1)]]
    assert min(stripes) > max(dots)
    # Families are drawn from the seed; many indices cover several of them.
    assert len({style_family(i, 0) for i in range(40)}) >= 5


def test_content_images_differ():
    imgs = [generate_image("content", i, SIZE, seed=0) for i in range(6)]
    for a, b in itertools.combinations(imgs, 2):
        assert (a - b).abs().mean() > 0.05
    assert (generate_image("content", 0, SIZE, 0) - generate_image("style", 0, SIZE, 0)).abs().mean() > 0.05


def test_same_picture_at_any_size():
    for kind, family in [("content", None), ("style", "clouds")]:
        # Compared at a coarse scale: the layout must match; fine detail may alias.
        big, small = (generate_image(kind, 1, n, seed=4, family=family)[None] for n in (128, 48))
        big, small = (F.interpolate(x, size=16, mode="bilinear", antialias=True) for x in (big, small))
        assert (big - small).abs().mean() < 0.03
        other = F.interpolate(generate_image(kind, 2, 48, seed=4, family=family)[None], size=16, mode="bilinear", antialias=True)
        assert (other - small).abs().mean() > 0.05


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    generate_image("style", 0, 16, 0, family="strokes")
    generate_image("content", 0, 16, 0)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="texture", index=0, size=16), "kind"),
        (dict(kind="style", index=-1, size=16), "index"),
        (dict(kind="style", index=0, size=4), "size"),
        (dict(kind="style", index=0, size=16, family="zebra"), "zebra"),
        (dict(kind="content", index=0, size=16, family="dots"), "style images"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(DataError, match=match):
        generate_image(seed=0, **kwargs)


def test_generate_folder_writes_resumes_and_is_deterministic(tmp_path):
    seen: list[int] = []
    paths = generate_folder("style", 4, 32, seed=9, out_dir=tmp_path / "a", progress=seen.append)
    assert [p.name for p in paths] == [f"style_{i:05d}.png" for i in range(4)]
    assert seen == [1, 2, 3, 4]
    for i, p in enumerate(paths):
        img = load_image(p)
        assert img.shape == (3, 32, 32)
        # The PNG is the tensor rounded to 8 bits.
        assert (img - generate_image("style", i, 32, 9)).abs().max() <= 0.5 / 255 + 1e-6
    assert not list((tmp_path / "a").glob(".*tmp"))  # no temporary files left behind

    # Same seed elsewhere: byte-identical files.
    again = generate_folder("style", 4, 32, seed=9, out_dir=tmp_path / "b")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]

    # Resume: complete files of the right size are kept; missing, truncated or wrongly
    # sized ones are written again.
    old = 1_000_000_000_000_000_000  # an mtime far in the past: a rewrite would change it
    os.utime(paths[0], ns=(old, old))
    paths[1].unlink()
    paths[2].write_bytes(paths[2].read_bytes()[:100])
    generate_folder("style", 4, 16, seed=9, out_dir=tmp_path / "c")
    os.replace(tmp_path / "c" / "style_00003.png", paths[3])
    generate_folder("style", 5, 32, seed=9, out_dir=tmp_path / "a")
    assert paths[0].stat().st_mtime_ns == old  # kept, not rewritten
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert (tmp_path / "a" / "style_00004.png").exists()


def test_generate_folder_refuses_to_mix_seeds(tmp_path):
    generate_folder("content", 2, 16, seed=1, out_dir=tmp_path)
    generate_folder("style", 2, 16, seed=2, out_dir=tmp_path)  # other kind: other files, fine
    generate_folder("content", 3, 16, seed=1, out_dir=tmp_path)  # same sequence: resumes
    with pytest.raises(DataError, match="seed"):
        generate_folder("content", 3, 16, seed=2, out_dir=tmp_path)
    with pytest.raises(DataError, match="family"):
        generate_folder("style", 2, 16, seed=2, out_dir=tmp_path, family="dots")


def test_generate_folder_bad_count(tmp_path):
    with pytest.raises(DataError, match="count"):
        generate_folder("content", -1, 16, 0, tmp_path)
