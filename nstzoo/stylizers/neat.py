"""NeAT — a re-implementation from the papers; no official code or weights exist.

Ruta et al., "NeAT: Neural Artistic Tracing for Beautiful Style Transfer" (2023), as described in
the ALADIN-NST paper (§2) and the NeAT abstract: stylization as *editing* — the network predicts
a delta that is added to a (training-time) corrupted copy of the content image — with an expanded
PAMA-style attentional alignment on VGG features, contrastive losses with projection heads, a
patch discriminator on Sobel-selected edge patches (against "style halos") and Gatys identity
losses. Everything not stated there (which levels, how many stages, how the levels are fused,
loss weights) is nstzoo's choice, documented here and configurable. Weights come only from
``nstzoo stylizers train neat``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..nn.attention import AlignmentStage
from ..nn.decoder import adain_decoder
from ..nn.sizing import attention_working_size, pad_to_multiple, resize_to
from ..nn.vgg import NormalisedVGG19
from ..nn.losses.adversarial import discriminator_loss, generator_adversarial_loss
from ..nn.losses.histogram import RGBuvHistogram
from ..nn.losses.manifold import PAMA_LOSS_LAYERS, PAMA_STAGE_WEIGHTS, pama_stage_loss
from ..nn.losses.statistics import gram_loss, style_descriptor
from ..nn.stats import mean_variance_norm
from ..recipes import RecipeContext, load_frozen_vgg_encoder, step_generator
from ..specs import Recipe, StylizerSpec, TrainParts
from ._controls import check_alpha, style_weights_for

PAPER = ("Dan Ruta, Andrew Gilbert, John Collomosse, Eli Shechtman, Nicholas Kolkin. NeAT: Neural Artistic "
         "Tracing for Beautiful Style Transfer. 2023 (re-implemented by nstzoo from the paper descriptions)")
WEIGHTS_SOURCE = ("no official NeAT code or weights are published; train them with "
                  "`nstzoo stylizers train neat` (this plugin is a re-implementation)")
LEVEL_CHANNELS = {"relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
DEFAULT_LEVELS = ("relu3_1", "relu4_1", "relu5_1")
DEFAULT_MAX_TOKENS = 4096


def gaussian_blur(images: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
    """Blur each image ``[B,C,H,W]`` with its own Gaussian ``sigma`` ``[B]`` (0 = unchanged).

    One separable kernel size, set by ``max_sigma``, serves the whole batch, so the strengths are
    applied without leaving the device.
    """
    radius = max(1, math.ceil(3.0 * max_sigma))
    b, c, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    sigma = sigma.to(images).clamp_min(1e-3).view(b, 1)
    kernel = torch.exp(-offsets.view(1, -1) ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C,K]
    x = images.reshape(1, b * c, h, w)
    mode = "reflect" if radius < min(h, w) else "replicate"
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), kernel.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode=mode), kernel.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, h, w)


class NeATStylizer(nn.Module):
    """NeAT (nstzoo re-implementation): ``forward(content [B,3,H,W], style [B,3,H',W'])`` in [0, 1]
    -> ``[B,3,H,W]`` in [0, 1], computed as ``clamp(base + delta)``.

    Architecture (nstzoo's choices, see the module docstring):

    - VGG features at ``levels`` (any of relu3_1, relu4_1, relu5_1; relu4_1 is required);
    - at relu4_1 ``stages`` PAMA alignment stages (default 3, as PAMA), one stage at each other level;
    - aligned relu5_1 is upsampled, added to aligned relu4_1 and mixed by a 3x3 conv (``merge5``);
      the AdaIN decoder's first block brings it to relu3_1 scale, where aligned relu3_1 is added
      and mixed (``merge3``); the rest of the decoder outputs the 3-channel ``delta`` (no activation).

    ``base`` is the content itself at inference ("prior blurring disabled for speed", as ALADIN-NST
    runs NeAT), or a Gaussian blur of it when ``inference_blur_sigma > 0``; training blurs with a
    random strength per image and the network sees the same corrupted image it edits.

    High resolution: the delta is predicted at a working size whose finest attention level has at
    most ``max_tokens`` positions (stride 4 with relu3_1, else 8), resized bilinearly to ``H x W``,
    and added to the full-resolution base — detail of the content is never resampled.
    """

    #: Peak activation bytes per content pixel of one fp32 CPU call; the stylize engine plans tiles with it.
    #: bench/stylize_memory.py measured 1454 at 512 px and 2847-3053 at 1024 px (relu3_1 attention grows
    #: faster), plus ~15 %.
    peak_bytes_per_pixel = 3500
    #: Attention at relu3_1 flattens and transposes large maps, where channels-last only adds copies
    #: (bench/stylize_speed.py: batched 0.73x with it); the stylize engine keeps NCHW.
    prefer_channels_last = False

    def __init__(self, levels: tuple[str, ...] | list[str] = DEFAULT_LEVELS, stages: int = 3,
                 max_tokens: int = DEFAULT_MAX_TOKENS, inference_blur_sigma: float = 0.0):
        super().__init__()
        levels = tuple(levels)
        unknown = [lv for lv in levels if lv not in LEVEL_CHANNELS]
        if unknown or "relu4_1" not in levels or len(set(levels)) != len(levels):
            raise ConfigError(f"neat: option levels must be distinct names from {', '.join(LEVEL_CHANNELS)} "
                              f"including relu4_1, got {list(levels)!r}")
        if int(stages) < 1 or int(max_tokens) < 1 or float(inference_blur_sigma) < 0:
            raise ConfigError(f"neat: stages and max_tokens must be >= 1 and inference_blur_sigma >= 0, got "
                              f"stages={stages!r}, max_tokens={max_tokens!r}, "
                              f"inference_blur_sigma={inference_blur_sigma!r}")
        self.levels = tuple(lv for lv in LEVEL_CHANNELS if lv in levels)  # shallow to deep
        self.stages = int(stages)
        self.max_tokens = int(max_tokens)
        self.inference_blur_sigma = float(inference_blur_sigma)
        self.encoder = NormalisedVGG19(self.levels[-1])
        self.align = nn.ModuleDict({
            lv: nn.ModuleList(AlignmentStage(LEVEL_CHANNELS[lv]) for _ in range(self.stages if lv == "relu4_1" else 1))
            for lv in self.levels})
        self.pad = nn.ReflectionPad2d(1)
        if "relu5_1" in self.levels:
            self.merge5 = nn.Conv2d(512, 512, 3)
        if "relu3_1" in self.levels:
            self.merge3 = nn.Conv2d(256, 256, 3)
        self.decoder = adain_decoder()
        self.stride = 4 if "relu3_1" in self.levels else 8

    def predict_delta(self, base: Tensor, style: Tensor) -> Tensor:
        """``delta`` ``[B,3,H,W]`` for a base whose sides are multiples of 16 (no resizing, no clamp)."""
        content_feats = dict(zip(self.levels, self.encoder.taps(base, self.levels)))
        style_feats = dict(zip(self.levels, self.encoder.taps(style, self.levels)))
        aligned = {}
        for level in self.levels:
            feat = content_feats[level]
            for stage in self.align[level]:
                feat = stage(feat, style_feats[level])
            aligned[level] = feat
        feat = aligned["relu4_1"]
        if "relu5_1" in aligned:
            feat = self.merge5(self.pad(feat + F.interpolate(aligned["relu5_1"], scale_factor=2, mode="nearest")))
        feat = self.decoder[:4](feat)  # 512 -> 256 channels, x2: relu3_1 scale
        if "relu3_1" in aligned:
            feat = F.relu(self.merge3(self.pad(feat + aligned["relu3_1"])))
        return self.decoder[4:](feat)

    def edit(self, base: Tensor, style: Tensor) -> Tensor:
        """``base + delta`` (unclamped) for a base ``[B,3,H,W]`` with sides multiples of 16; used in training."""
        return base + self.predict_delta(base, style)

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        h, w = content.shape[-2:]
        base = content
        if self.inference_blur_sigma > 0:
            sigma = content.new_full((content.shape[0],), self.inference_blur_sigma)
            base = gaussian_blur(content, sigma, self.inference_blur_sigma)
        style = resize_to(style, attention_working_size(*style.shape[-2:], self.max_tokens, self.stride))
        work = attention_working_size(h, w, self.max_tokens, self.stride)
        padded, (wh, ww) = pad_to_multiple(resize_to(base, work), 16)
        delta = self.predict_delta(padded, style)[..., :wh, :ww]
        return (base + resize_to(delta, (h, w))).clamp(0.0, 1.0)

    def stylize_controlled(self, content: Tensor, styles: Sequence[Tensor], *, alpha: float = 1.0,
                           style_weights: Sequence[float] | None = None, whole: Tensor | None = None) -> Tensor:
        """``content [B,3,H,W]``, one style ``[B or 1,3,H',W']`` in [0, 1] -> ``[B,3,H,W]`` in [0, 1].

        The delta is predicted at the content's own size (callers tile large images); the style keeps
        the ``max_tokens`` cap. NeAT stylizes by *editing*, so ``alpha`` scales the edit:
        ``base + alpha * delta`` (``alpha=0`` returns the content). Style interpolation is not
        offered: the aligned features of several styles are not a meaningful mix for a delta network
        trained on one style at a time (the spec does not declare ``style_mix``).
        """
        style_weights_for(styles, style_weights)
        if len(styles) != 1:
            raise ValueError("neat takes one style (style_mix is not among its controls)")
        alpha = check_alpha(alpha)
        base = content
        if self.inference_blur_sigma > 0:
            sigma = content.new_full((content.shape[0],), self.inference_blur_sigma)
            base = gaussian_blur(content, sigma, self.inference_blur_sigma)
        style = styles[0]
        style = resize_to(style, attention_working_size(*style.shape[-2:], self.max_tokens, self.stride))
        padded, (h, w) = pad_to_multiple(base, 16)
        delta = self.predict_delta(padded, style)[..., :h, :w]  # a style batch of 1 broadcasts in the stages
        return (base + alpha * delta).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- training recipe
# NeAT loss weights: the paper names the terms but not their weights; these are nstzoo's choices.
NEAT_LOSS_WEIGHTS = {"pama": 1.0, "contrast_style": 0.3, "contrast_content": 0.3, "adversarial": 0.1,
                     "identity_gram": 1000.0}
NEAT_CONTRAST_TEMPERATURE = 0.1
ALL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")




@dataclass
class NeATTrainOptions:
    """NeAT's training switches (nstzoo's choices where the papers give none; see the module docstring).

    Attributes:
        blur: train on blurred contents, sigma uniform in [0, ``blur_sigma_max``] per (seed, step).
        patch_size, patches: the Sobel-selected patches the discriminator judges.
        weights: overrides of :data:`NEAT_LOSS_WEIGHTS` by term name.
    """

    blur: bool = True
    blur_sigma_max: float = 2.0
    patch_size: int = 32
    patches: int = 8
    weights: dict[str, float] = field(default_factory=dict)


def _check_neat(cfg: Any) -> None:
    if cfg.batch_size < 2:
        raise ConfigError("neat training: batch_size must be >= 2 (contrastive groups need two images)")
    bad = sorted(set(cfg.recipe.weights) - set(NEAT_LOSS_WEIGHTS))
    if bad:
        raise ConfigError(f"neat training: unknown loss weight(s) recipe.weights.{bad[0]}; "
                          f"known: {', '.join(NEAT_LOSS_WEIGHTS)}")


def group_contrastive_loss(embeddings: Tensor, groups: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised InfoNCE: embeddings ``[N,D]`` sharing a ``groups`` id ``[N]`` are positives.

    For each anchor with at least one positive: the mean over its positives of the log-softmax of
    cosine similarity / ``temperature`` against every other embedding. Lower when positives align.
    """
    if temperature <= 0:
        raise ValueError(f"group_contrastive_loss: temperature must be > 0, got {temperature}")
    z = F.normalize(embeddings, dim=1)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits.log_softmax(dim=1).masked_fill(self_mask, 0.0)
    positives = (groups.unsqueeze(0) == groups.unsqueeze(1)) & ~self_mask
    counts = positives.sum(dim=1)
    per_anchor = -(log_prob * positives).sum(dim=1) / counts.clamp_min(1)
    has_positive = (counts > 0).to(per_anchor.dtype)
    return (per_anchor * has_positive).sum() / has_positive.sum().clamp_min(1.0)


class ProjectionHead(nn.Module):
    """Small MLP ``[N,in] -> [N,out]`` (Linear, ReLU, Linear) for contrastive losses."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(images: Tensor) -> Tensor:
    """Gradient magnitude of the luminance: ``[B,3,H,W]`` -> ``[B,1,H,W]``."""
    grey = (images * images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(images)
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return (grad.pow(2).sum(dim=1, keepdim=True) + 1e-12).sqrt()


def sobel_edge_patches(images: Tensor, patch_size: int, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` non-overlapping ``patch_size`` patches of each image with the strongest edges.

    Args:
        images: ``[B,3,H,W]``; H and W are cropped down to multiples of ``patch_size``.
    Returns:
        patches ``[B,count,3,p,p]`` (strongest first) and their grid indices ``[B,count]``
        (row-major over the ``H//p x W//p`` grid). Selection has no gradient; the patches do.
    """
    p = patch_size
    rows, cols = images.shape[-2] // p, images.shape[-1] // p
    if rows * cols < count or count < 1:
        raise ValueError(f"sobel_edge_patches: a {tuple(images.shape[-2:])} image has {rows * cols} "
                         f"patches of {p} px, cannot pick {count}")
    images = images[..., : rows * p, : cols * p]
    with torch.no_grad():
        scores = F.avg_pool2d(sobel_magnitude(images), p).flatten(1)  # [B,rows*cols]
        index = scores.topk(count, dim=1).indices
    columns = F.unfold(images, kernel_size=p, stride=p)  # [B,3*p*p,rows*cols]
    picked = columns.gather(2, index.unsqueeze(1).expand(-1, columns.shape[1], -1))
    patches = picked.transpose(1, 2).reshape(images.shape[0], count, images.shape[1], p, p)
    return patches, index


class CooccurrenceDiscriminator(nn.Module):
    """Judges whether a patch co-occurs with a set of reference patches from the style image.

    ``forward(patches [B,K,3,p,p], references [B,R,3,p,p]) -> logits [B,K]``: each patch's code is
    concatenated with the mean code of its image's references (Swapping-Autoencoder style), so the
    discriminator asks "does this texture belong to that style?" rather than "is this realistic?".
    """

    def __init__(self, width: int = 64):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, 2, 1), act(), nn.Conv2d(width // 2, width, 3, 2, 1), act(),
            nn.Conv2d(width, width, 3, 1, 1), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(2 * width, width), act(), nn.Linear(width, 1))

    def _codes(self, patches: Tensor) -> Tensor:
        b, k = patches.shape[:2]
        return self.encoder(patches.flatten(0, 1)).view(b, k, -1)

    def forward(self, patches: Tensor, references: Tensor) -> Tensor:
        codes = self._codes(patches)
        context = self._codes(references).mean(dim=1, keepdim=True).expand_as(codes)
        return self.head(torch.cat([codes, context], dim=2)).squeeze(-1)



class _NeATAux(nn.Module):
    """NeAT's training-only modules: projection heads (trained with the generator)."""

    def __init__(self):
        super().__init__()
        style_dim = 2 * sum({"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}.values())
        self.style_head = ProjectionHead(style_dim)
        self.content_head = ProjectionHead(512 * 4)


def _build_neat(model: nn.Module, ctx: RecipeContext) -> TrainParts:
    """The generator's Adam also trains the projection heads; the discriminator has its own (GAN betas)."""
    device = ctx.device
    load_frozen_vgg_encoder(model.encoder, ctx)
    aux = _NeATAux().to(device)
    discriminator = CooccurrenceDiscriminator().to(device)
    histogram = RGBuvHistogram().to(device)
    generator_params = [p for p in model.parameters() if p.requires_grad] + list(aux.parameters())
    optimizers = {"total": ctx.adam(generator_params),
                  "discriminator": ctx.adam(discriminator.parameters(), betas=(0.5, 0.999))}
    return TrainParts(model, optimizers, modules={"aux": aux, "discriminator": discriminator, "histogram": histogram},
                      loss_network=ctx.vgg())


def _content_code(feat4_1: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(mean_variance_norm(feat4_1), 2).flatten(1)


def neat_training_terms(parts: TrainParts, cfg: Any, content: Tensor, style: Tensor,
                        step: int) -> dict[str, Tensor]:
    """NeAT generator terms (weighted, with ``"total"``) and the discriminator's loss ``"discriminator"``.

    The batch is used twice: ``out_i = G(c_i, s_i)`` and ``swap_i = G(c_{i-1}, s_i)``, so each style
    has a group of two outputs plus its source image, and each content a group of two outputs
    plus itself, for the contrastive terms. The discriminator judges detached output patches, so
    its loss has its own graph; the generator's update does not change it.
    """
    model, vgg = parts.model, parts.loss_network
    aux, disc = parts.modules["aux"], parts.modules["discriminator"]
    options: NeATTrainOptions = cfg.recipe
    weights = {**NEAT_LOSS_WEIGHTS, **options.weights}
    b = content.shape[0]
    base = content
    if options.blur:
        sigma = torch.rand(b, generator=step_generator(cfg.seed, step, 2)) * options.blur_sigma_max
        base = gaussian_blur(content, sigma.to(content.device), options.blur_sigma_max)
    out = model.edit(base, style)
    swap = model.edit(base.roll(1, dims=0), style)
    with torch.no_grad():
        content_feats = vgg.taps(content, ALL_LAYERS)
        style_feats = vgg.taps(style, ALL_LAYERS)
    out_feats, swap_feats = vgg.taps(out, ALL_LAYERS), vgg.taps(swap, ALL_LAYERS)
    layers = [ALL_LAYERS.index(lv) for lv in PAMA_LOSS_LAYERS]
    pick = lambda feats: [feats[i] for i in layers]  # noqa: E731
    pama = pama_stage_loss(pick(out_feats), pick(content_feats), pick(style_feats), out, style,
                             PAMA_STAGE_WEIGHTS[-1], parts.modules["histogram"])
    terms = {f"pama_{k}": v for k, v in pama.items() if k != "total"}
    terms["pama"] = weights["pama"] * pama["total"]

    ids = torch.arange(b, device=content.device)
    style_codes = aux.style_head(torch.cat([style_descriptor(f) for f in (out_feats, swap_feats, style_feats)]))
    terms["contrast_style"] = weights["contrast_style"] * group_contrastive_loss(
        style_codes, torch.cat([ids, ids, ids]), NEAT_CONTRAST_TEMPERATURE)
    content_codes = aux.content_head(torch.cat([_content_code(f[3]) for f in (out_feats, swap_feats, content_feats)]))
    terms["contrast_content"] = weights["contrast_content"] * group_contrastive_loss(
        content_codes, torch.cat([ids, (ids - 1) % b, ids]), NEAT_CONTRAST_TEMPERATURE)

    patch = min(options.patch_size, cfg.size // 2)
    count = min(options.patches, (cfg.size // patch) ** 2)
    fake_patches, _ = sobel_edge_patches(out, patch, count)
    style_patches, _ = sobel_edge_patches(style, patch, count)
    # Frozen while judging the generator, so the generator's backward leaves it without gradients.
    disc.requires_grad_(False)
    terms["adversarial"] = weights["adversarial"] * generator_adversarial_loss(disc(fake_patches, style_patches))
    disc.requires_grad_(True)

    identity_content = model.edit(content, content)
    identity_style = model.edit(style, style)
    terms["identity_gram"] = weights["identity_gram"] * (
        gram_loss(vgg.taps(identity_content, ALL_LAYERS), list(content_feats))
        + gram_loss(vgg.taps(identity_style, ALL_LAYERS), list(style_feats)))
    terms["total"] = sum(terms[k] for k in ("pama", "contrast_style", "contrast_content", "adversarial",
                                            "identity_gram"))
    fake_patches = fake_patches.detach()
    terms["discriminator"] = discriminator_loss(disc(style_patches, style_patches), disc(fake_patches, style_patches))
    return terms


RECIPE = Recipe(build=_build_neat, losses=neat_training_terms, options=NeATTrainOptions, check=_check_neat,
                defaults={"steps": 1000, "batch_size": 4, "checkpoint_every": 500})


SPEC = StylizerSpec(
    name="neat",
    factory=NeATStylizer,
    summary="NeAT (nstzoo re-implementation from the papers): multi-level PAMA-style alignment predicting "
            "an edit (delta) of the content image",
    paper=PAPER,
    weight_files=(),
    import_official=None,
    needs_weights=True,
    default_options={"levels": list(DEFAULT_LEVELS), "stages": 3, "max_tokens": DEFAULT_MAX_TOKENS,
                     "inference_blur_sigma": 0.0},
    recipe=RECIPE,
    weights_source=WEIGHTS_SOURCE,
    controls=frozenset({"alpha"}),
)


@hookimpl
def register_stylizers(register: Any) -> None:
    register(SPEC)


__all__ = ["NeATStylizer", "NeATTrainOptions", "gaussian_blur", "neat_training_terms", "NEAT_LOSS_WEIGHTS",
           "group_contrastive_loss", "sobel_edge_patches", "CooccurrenceDiscriminator", "RECIPE", "SPEC",
           "register_stylizers"]
