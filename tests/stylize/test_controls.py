"""Controls, per stylizer that declares them: alpha and style interpolation move the output the
documented way; colour preservation keeps the content's chroma; undeclared controls are refused."""

from __future__ import annotations

import pytest
import torch

from nstzoo.nn.sizing import pad_to_multiple
from nstzoo.registry import get_registry
from nstzoo.specs import StylizerSpec
from nstzoo.errors import PluginError
from nstzoo.stylize import ControlError, Controls, Stylizer, check_controls, parse_style_weights, preserve_color
from nstzoo.stylize.controls import rgb_to_ycbcr

from .helpers import lively, smooth

CONTENT = smooth(1, 32, 40)
STYLE_A, STYLE_B = smooth(2, 32, 32), smooth(3, 40, 32)
# (stylizer, declared controls) as documented in each spec.
DECLARED = {"adain": {"alpha", "style_mix"}, "efdm": {"alpha", "style_mix"}, "cast": {"alpha", "style_mix"},
            "sanet": {"alpha", "style_mix"}, "pama": {"alpha", "style_mix"}, "adaattn": {"alpha", "style_mix"},
            "ghiasi": {"alpha", "style_mix"}, "dumoulin": {"alpha", "style_mix"}, "reinhard": {"alpha", "style_mix"},
            "neat": {"alpha"}, "patch-wct": {"alpha"}}


def _reconstruction(name: str, model: torch.nn.Module, content: torch.Tensor) -> torch.Tensor:
    """What alpha = 0 must give: the content, or the method's own rendering of the content's features."""
    if name in ("adain", "efdm", "pama"):
        return model.decoder(model.encoder(content)).clamp(0, 1)
    if name == "cast":
        return ((model.decoder(model.encoder(content * 2 - 1)) + 1) / 2).clamp(0, 1)
    if name in ("sanet", "adaattn"):  # these pad the content to a multiple of 16 (relu5_1), then crop
        padded, (h, w) = pad_to_multiple(content, 16)
        feats = model.encode(padded)
        out = model.decoder(feats[0]) if name == "sanet" else model.decoder(feats[3], feats[2])
        return out[..., :h, :w].clamp(0, 1)
    if name == "ghiasi":
        return model.stylize_with_vector(content, model.style_vector(content))
    if name == "dumoulin":
        return model.stylize_with_weights(content, model.style_weights(content))
    return content  # neat (content + 0 * delta), reinhard, patch-wct (strength 0)


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: lively(name) for name in DECLARED}


def test_specs_declare_the_documented_controls():
    registry = get_registry()
    for name, declared in DECLARED.items():
        assert registry.stylizer(name).controls == frozenset(declared), name


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_alpha_runs_from_the_reconstruction_to_the_default_output(name, models):
    model = models[name]
    with torch.inference_mode():
        default = model(CONTENT, STYLE_A)
        outputs = {a: model.stylize_controlled(CONTENT, [STYLE_A], alpha=a) for a in (0.0, 0.5, 1.0)}
        reconstruction = _reconstruction(name, model, CONTENT)
    torch.testing.assert_close(outputs[1.0], default, atol=1e-5, rtol=0)  # alpha 1 = the default output
    torch.testing.assert_close(outputs[0.0], reconstruction, atol=1e-5, rtol=0)
    # Half-way is measurably different from both ends (in the features it is exactly between them; a
    # nonlinear decoder need not keep it half-way in pixels).
    gap_default = (outputs[0.5] - default).abs().mean().item()
    gap_reconstruction = (outputs[0.5] - reconstruction).abs().mean().item()
    assert gap_default > 2e-3 and gap_reconstruction > 2e-3, (name, gap_default, gap_reconstruction)


@pytest.mark.parametrize("name", sorted(n for n, c in DECLARED.items() if "style_mix" in c))
def test_style_interpolation_moves_between_the_styles(name, models):
    model = models[name]
    with torch.inference_mode():
        only_a = model.stylize_controlled(CONTENT, [STYLE_A])
        only_b = model.stylize_controlled(CONTENT, [STYLE_B])
        weights = {w: model.stylize_controlled(CONTENT, [STYLE_A, STYLE_B], style_weights=[w, 1 - w])
                   for w in (1.0, 0.7, 0.0)}
    torch.testing.assert_close(weights[1.0], only_a, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights[0.0], only_b, atol=1e-5, rtol=0)
    to_a = (weights[0.7] - only_a).abs().mean().item()
    to_b = (weights[0.7] - only_b).abs().mean().item()
    assert (only_a - only_b).abs().mean().item() > 5e-3, name  # the two styles differ at all
    assert 0 < to_a < to_b, (name, to_a, to_b)  # 70 % of style A: nearer A than B


# A chroma tolerance: the recombined colour is exact inside the RGB cube; clamping saturated pixels whose
# new luminance leaves the gamut moves their Cb/Cr. Mean over pixels stays well under one 8-bit step.
CHROMA_TOLERANCE = 2.0 / 255


@pytest.mark.parametrize("name", sorted(DECLARED))  # colour preservation is offered by every stylizer
def test_preserve_color_keeps_the_content_chroma(name, models):
    model = models[name]
    stylizer = Stylizer(name, model, get_registry().stylizer(name).controls)
    with torch.inference_mode():
        plain = stylizer.call(CONTENT, [STYLE_A], Controls())
        kept = stylizer.call(CONTENT, [STYLE_A], Controls(preserve_color=True))
    content_chroma = rgb_to_ycbcr(CONTENT)[:, 1:]
    error_kept = (rgb_to_ycbcr(kept)[:, 1:] - content_chroma).abs().mean().item()
    error_plain = (rgb_to_ycbcr(plain)[:, 1:] - content_chroma).abs().mean().item()
    assert error_kept < CHROMA_TOLERANCE, (name, error_kept)
    assert error_plain > 2 * error_kept, (name, error_plain, error_kept)
    # Luminance is the stylized output's (up to the gamut clamp).
    luma_gap = (rgb_to_ycbcr(kept)[:, :1] - rgb_to_ycbcr(plain)[:, :1]).abs().mean().item()
    assert luma_gap < CHROMA_TOLERANCE, luma_gap


def test_preserve_color_is_exact_inside_the_gamut():
    content = torch.full((1, 3, 4, 4), 0.5)
    content[:, 0] = 0.6  # a mild red: any luminance in [0.3, 0.7] stays inside the cube
    output = torch.linspace(0.3, 0.7, 16).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    kept = preserve_color(output, content)
    torch.testing.assert_close(rgb_to_ycbcr(kept)[:, 1:], rgb_to_ycbcr(content)[:, 1:], atol=1e-6, rtol=0)
    torch.testing.assert_close(rgb_to_ycbcr(kept)[:, :1], rgb_to_ycbcr(output)[:, :1], atol=1e-6, rtol=0)


def test_undeclared_controls_are_refused_naming_the_stylizer():
    with pytest.raises(ControlError, match="stylizer 'neat' cannot honour --style-weights"):
        check_controls("neat", frozenset({"alpha"}), Controls(style_weights=(0.5, 0.5)))
    with pytest.raises(ControlError, match="stylizer 'toy' cannot honour --alpha.*supports: none"):
        check_controls("toy", frozenset(), Controls(alpha=0.5))
    check_controls("toy", frozenset(), Controls(preserve_color=True))  # needs no declaration


def test_control_values_are_validated():
    assert parse_style_weights("7,3", 2) == pytest.approx((0.7, 0.3))
    for bad, count in (("0.5", 2), ("a,b", 2), ("-1,2", 2), ("0,0", 2)):
        with pytest.raises(ControlError, match="--style-weights"):
            parse_style_weights(bad, count)
    with pytest.raises(ControlError, match="--alpha"):
        Controls(alpha=1.5)


def test_spec_controls_are_validated():
    with pytest.raises(PluginError, match="unknown control"):
        StylizerSpec(name="x", factory=lambda: None, summary="", needs_weights=False, controls=frozenset({"beta"}))
    assert StylizerSpec(name="x", factory=lambda: None, summary="", needs_weights=False,
                        controls={"alpha"}).controls == frozenset({"alpha"})
