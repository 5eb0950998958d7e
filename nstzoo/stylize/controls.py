"""User controls of ``nstzoo stylize``: validation against a stylizer's declared controls, and colour preservation.

``--alpha`` and ``--style-weights`` are honoured by the stylizer itself (its spec declares them in
:attr:`nstzoo.specs.StylizerSpec.controls` and its module implements ``stylize_controlled``); a
stylizer that does not declare one is refused up front, before any work, with a
:class:`ControlError` naming it. ``--preserve-color`` needs no declaration: it post-processes any
output (:func:`preserve_color`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import NstzooError
from ..nn.color import apply_color_matrix

__all__ = ["Controls", "ControlError", "check_controls", "parse_style_weights", "preserve_color",
           "rgb_to_ycbcr", "ycbcr_to_rgb", "CONTROL_FLAGS"]

#: control name -> the command-line flag that asks for it (for messages).
CONTROL_FLAGS = {"alpha": "--alpha", "style_mix": "--style-weights (style interpolation)"}


class ControlError(NstzooError):
    """A control the chosen stylizer cannot honour, or a control value out of range."""


@dataclass(frozen=True)
class Controls:
    """What the user asked for beyond content and style.

    Attributes:
        alpha: content-style strength in [0, 1]; 1 = the stylizer's default output.
        style_weights: K non-negative weights summing to 1 when K styles are interpolated, else None.
        preserve_color: keep the content's chroma (luminance-only transfer).
    """

    alpha: float = 1.0
    style_weights: tuple[float, ...] | None = None
    preserve_color: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise ControlError(f"--alpha must be a number in [0, 1], got {self.alpha!r}")

    def needed(self) -> set[str]:
        """The declared controls these settings require of a stylizer."""
        needed = set()
        if self.alpha != 1.0:
            needed.add("alpha")
        if self.style_weights is not None:
            needed.add("style_mix")
        return needed


def parse_style_weights(text: str, count: int) -> tuple[float, ...]:
    """``"0.7,0.3"`` for ``count`` styles -> weights normalised to sum 1.

    Raises:
        ControlError: not numbers, a count other than ``count``, a negative weight, or all zero.
    """
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ControlError(f"--style-weights {text!r}: give comma-separated numbers, e.g. 0.7,0.3") from None
    if len(weights) != count:
        raise ControlError(f"--style-weights {text!r} gives {len(weights)} weight(s) for {count} --style image(s)",
                           hint="give one weight per --style, in the same order")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ControlError(f"--style-weights {text!r}: weights must be non-negative and not all zero")
    total = sum(weights)
    return tuple(w / total for w in weights)


def check_controls(stylizer: str, declared: frozenset[str] | set[str], controls: Controls) -> None:
    """Refuse controls ``stylizer`` does not declare.

    Raises:
        ControlError: naming the stylizer, the refused flag(s) and what it does support.
    """
    missing = sorted(controls.needed() - set(declared))
    if missing:
        flags = ", ".join(CONTROL_FLAGS[m] for m in missing)
        supported = ", ".join(CONTROL_FLAGS[c] for c in sorted(declared)) or "none"
        raise ControlError(f"stylizer {stylizer!r} cannot honour {flags}; it supports: {supported}",
                           hint=f"drop that option for {stylizer}; `nstzoo stylizers show {stylizer}` lists its controls")


# ITU-R BT.601 full-range YCbCr (JPEG's): Y is luminance, Cb/Cr the colour differences.
_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114],
                              [-0.168736, -0.331264, 0.5],
                              [0.5, -0.418688, -0.081312]], dtype=torch.float64)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """``[B,3,H,W]`` RGB in [0, 1] -> YCbCr (Y in [0, 1], Cb and Cr in [-0.5, 0.5])."""
    return apply_color_matrix(_RGB_TO_YCBCR, rgb)


def ycbcr_to_rgb(ycbcr: Tensor) -> Tensor:
    """The exact inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    return apply_color_matrix(_YCBCR_TO_RGB, ycbcr)


def preserve_color(output: Tensor, content: Tensor) -> Tensor:
    """Luminance-only transfer: the output's Y under the content's Cb and Cr.

    Args:
        output: stylized ``[B,3,H,W]`` in [0, 1].
        content: the content ``[B,3,H,W]`` in [0, 1] it was made from (same size).

    Returns:
        ``[B,3,H,W]`` in [0, 1]. The chroma equals the content's exactly wherever the recombined colour
        lies inside the RGB cube; the final clamp moves it only for saturated colours whose new
        luminance leaves the gamut (measured in tests/stylize/test_controls.py).

    Works for every stylizer: it post-processes the output, so no declaration is needed.
    """
    if output.shape != content.shape:
        raise ValueError(f"preserve_color: output {tuple(output.shape)} and content {tuple(content.shape)} differ")
    y = rgb_to_ycbcr(output.float())[:, :1]
    chroma = rgb_to_ycbcr(content.float())[:, 1:]
    return ycbcr_to_rgb(torch.cat([y, chroma], dim=1)).clamp(0.0, 1.0).to(output.dtype)


def mixed_name(names: Sequence[str]) -> str:
    """The label of an interpolated style in output names: ``a+b``."""
    return "+".join(names)
