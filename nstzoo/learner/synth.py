"""The batch synthesizer: stylizes random contents with random styles, on the fly, with several stylizers.

One step (ALADIN-NST §3): B content images and B/2 style images; style ``j`` stylizes contents
``2j`` and ``2j + 1``, so every stylized image has exactly one stylized positive (same style,
different content). A stylizer is drawn per sample; samples are grouped by stylizer so each
stylizer runs once per step on its sub-batch. The draws and the grouping are made on the host
from a seeded generator *before* any device work, so the step issues no device-to-host copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..contract import OutputGuard, plugin_code


@dataclass
class SynthBatch:
    """One synthesized batch.

    Attributes:
        stylized: ``[B,3,S,S]`` in [0, 1], on the synthesizer's device.
        style_id: ``[B]`` int64 — the dataset index of the style image that made each sample.
        content_id: ``[B]`` int64 — the dataset index of each sample's content image.
        method: ``[B]`` int64 — index into ``method_names`` of the stylizer used.
        method_names: the stylizer names, in the order of ``method`` indices.
        style_images: ``[B/2,3,S,S]`` the source style images (the "ground truth" positives).
        style_image_ids: ``[B/2]`` int64 dataset indices of ``style_images``.
    """

    stylized: torch.Tensor
    style_id: torch.Tensor
    content_id: torch.Tensor
    method: torch.Tensor
    method_names: list[str]
    style_images: torch.Tensor
    style_image_ids: torch.Tensor


class BatchSynthesizer:
    """Compose frozen stylizers into an on-the-fly stylized batch.

    Args:
        stylizers: name -> stylizer module (frozen, eval mode; moved to ``device`` here).
        weights: name -> relative draw probability (missing names: 1).
        device: where stylization runs (CUDA when available is the trainer's default).
        autocast_dtype: e.g. ``torch.bfloat16`` to run stylizers under autocast on CUDA; None for fp32.
        seed: seeds the method draws; the draw for step ``t`` depends only on ``(seed, t)``,
            so a resumed run draws the same methods as an uninterrupted one.
    """

    def __init__(self, stylizers: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None, *,
                 device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None, seed: int = 0):
        if not stylizers:
            raise ValueError("at least one stylizer is needed")
        self.names = list(stylizers)
        self.device = torch.device(device)
        self.stylizers = {n: m.eval().requires_grad_(False).to(self.device) for n, m in stylizers.items()}
        probs = torch.tensor([float((weights or {}).get(n, 1.0)) for n in self.names], dtype=torch.float64)
        if (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"stylizer weights must be >= 0 with a positive sum, got {dict(zip(self.names, probs.tolist()))}")
        self.probs = probs / probs.sum()
        self.autocast_dtype = autocast_dtype
        self.seed = seed
        # Every output is checked against the stylizer contract (shape, finite, [0, 1]) and clamped;
        # on CUDA the value checks are read back only once finished, so the step still never syncs.
        self.guard = OutputGuard()

    def draw_methods(self, n: int, step: int) -> torch.Tensor:
        """``[n]`` int64 stylizer indices for step ``step`` (CPU, deterministic in (seed, step))."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return torch.multinomial(self.probs, n, replacement=True, generator=generator)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    @torch.inference_mode()
    def __call__(self, contents: torch.Tensor, styles: torch.Tensor, content_ids: torch.Tensor,
                 style_ids: torch.Tensor, step: int = 0, methods: torch.Tensor | None = None) -> SynthBatch:
        """Stylize ``contents [B,3,S,S]`` with ``styles [B/2,3,S',S']`` (each style twice).

        ``content_ids [B]`` and ``style_ids [B/2]`` are dataset indices (CPU or device). ``methods``
        overrides the drawn stylizer per sample (tests).
        """
        b = contents.shape[0]
        if b % 2 or styles.shape[0] * 2 != b:
            raise ValueError(f"need B contents and B/2 styles with B even, got {b} and {styles.shape[0]}")
        self.guard.poll()  # report a bad output of an earlier step as soon as its check has finished
        if methods is None:
            methods = self.draw_methods(b, step)
        methods = methods.to("cpu", torch.int64)
        contents = contents.to(self.device, non_blocking=True)
        styles = styles.to(self.device, non_blocking=True)
        style_of_sample = torch.arange(b) // 2  # host-side: style j -> samples 2j, 2j+1
        stylized = torch.empty((b, 3, *contents.shape[-2:]), device=self.device, dtype=torch.float32)
        for index, name in enumerate(self.names):
            members = (methods == index).nonzero().flatten()  # a host tensor: no device sync
            if members.numel() == 0:
                continue
            on_device = members.to(self.device, non_blocking=True)
            sub_styles = styles.index_select(0, style_of_sample[members].to(self.device, non_blocking=True))
            sub_contents = contents.index_select(0, on_device)
            with self._autocast(), plugin_code(None, name, "forward"):
                out = self.stylizers[name](sub_contents, sub_styles)
            out = self.guard(name, sub_contents, out)
            stylized.index_copy_(0, on_device, out.float())
        style_ids = style_ids.to(torch.int64)
        return SynthBatch(
            stylized=stylized,
            style_id=style_ids.to(self.device).repeat_interleave(2),
            content_id=content_ids.to(self.device, torch.int64),
            method=methods.to(self.device),
            method_names=list(self.names),
            style_images=styles,
            style_image_ids=style_ids.to(self.device),
        )


def encoder_batch(batch: SynthBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The contrastive batch: stylized images then source style images.

    Returns ``images [B + B/2, 3, S, S]``, ``labels [B + B/2]`` (style ids) and ``is_source [B + B/2]``.
    The style images are resized to the stylized images' size when they differ.
    """
    styles = batch.style_images
    if styles.shape[-2:] != batch.stylized.shape[-2:]:
        styles = torch.nn.functional.interpolate(styles.float(), size=batch.stylized.shape[-2:], mode="bilinear",
                                                 antialias=True, align_corners=False)
    images = torch.cat([batch.stylized, styles.float()])
    labels = torch.cat([batch.style_id, batch.style_image_ids])
    is_source = torch.cat([torch.zeros(len(batch.style_id), dtype=torch.bool, device=images.device),
                           torch.ones(len(batch.style_image_ids), dtype=torch.bool, device=images.device)])
    return images, labels, is_source


def method_histogram(batch: SynthBatch) -> dict[str, int]:
    counts = torch.bincount(batch.method.cpu(), minlength=len(batch.method_names)).tolist()
    return dict(zip(batch.method_names, counts))


__all__ = ["BatchSynthesizer", "SynthBatch", "encoder_batch", "method_histogram"]
