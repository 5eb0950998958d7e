"""PAMA and NeAT recipes for the shared training loop (:func:`nstzoo.stylizer_training.train_stylizer`).

Their own config keys, beside the shared ones (see :func:`~nstzoo.stylizer_training.train_stylizer`):

- PAMA: ``color`` (true): the RGB-uv histogram colour loss.
- NeAT: ``blur`` (true): train on blurred contents (random sigma in [0, ``blur_sigma_max``=2],
  drawn per (seed, step)); ``patch_size`` (32) and ``patches`` (8) for the Sobel-selected
  discriminator patches; ``weights``: overrides of :data:`NEAT_LOSS_WEIGHTS`. ``batch_size`` must
  be at least 2 (contrastive groups).

Both resume by default and crop at ``size`` after resizing the shorter side to ``size``. PAMA's
objective is :func:`nstzoo.stylizers.pama.pama_training_terms`; the loss functions are in
:mod:`nstzoo.nn.losses.manifold`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.stats import mean_variance_norm
from ..nn.vgg import NormalisedVGG19
from ..specs import StylizerSpec
from ..nn.losses import manifold as L
from ..stylizer_training import Recipe, TrainParts, adam, build_generator_only, step_generator

# NeAT loss weights: the paper names the terms but not their weights; these are nstzoo's choices.
NEAT_LOSS_WEIGHTS = {"pama": 1.0, "contrast_style": 0.3, "contrast_content": 0.3, "adversarial": 0.1,
                     "identity_gram": 1000.0}
NEAT_CONTRAST_TEMPERATURE = 0.1
ALL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# Short runs by default, resumable unless told otherwise.
_DEFAULTS = {"steps": 1000, "batch_size": 4, "checkpoint_every": 500, "resume": True}


# ----------------------------------------------------------------------------- PAMA
def _pama_spec() -> StylizerSpec:
    from ..stylizers.pama import SPEC

    return SPEC


def _build_pama(model: nn.Module, loss_vgg: NormalisedVGG19, cfg: dict[str, Any]) -> TrainParts:
    parts = build_generator_only(model, loss_vgg, cfg)
    if cfg["color"]:
        parts.modules["histogram"] = L.RGBuvHistogram().to(next(model.parameters()).device)
    return parts


def _pama_losses(parts: TrainParts, cfg: dict[str, Any], content: Tensor, style: Tensor,
                 step: int) -> dict[str, Tensor]:
    from ..stylizers.pama import pama_training_terms

    return pama_training_terms(parts.model, parts.loss_vgg, content, style, parts.modules.get("histogram"))


PAMA = Recipe(spec=_pama_spec, build=_build_pama, losses=_pama_losses, defaults={**_DEFAULTS, "color": True})


# ----------------------------------------------------------------------------- NeAT
def _neat_spec() -> StylizerSpec:
    from ..stylizers.neat import SPEC

    return SPEC


def _check_neat(cfg: dict[str, Any]) -> None:
    if cfg["batch_size"] < 2:
        raise ConfigError("neat training: batch_size must be >= 2 (contrastive groups need two images)")
    bad = sorted(set(cfg["weights"]) - set(NEAT_LOSS_WEIGHTS))
    if bad:
        raise ConfigError(f"neat training: unknown loss weight(s) {', '.join(bad)}; "
                          f"known: {', '.join(NEAT_LOSS_WEIGHTS)}")


class _NeATAux(nn.Module):
    """NeAT's training-only modules: projection heads (trained with the generator)."""

    def __init__(self):
        super().__init__()
        style_dim = 2 * sum({"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}.values())
        self.style_head = L.ProjectionHead(style_dim)
        self.content_head = L.ProjectionHead(512 * 4)


def _build_neat(model: nn.Module, loss_vgg: NormalisedVGG19, cfg: dict[str, Any]) -> TrainParts:
    """The generator's Adam also trains the projection heads; the discriminator has its own (GAN betas)."""
    device = next(model.parameters()).device
    aux = _NeATAux().to(device)
    discriminator = L.CooccurrenceDiscriminator().to(device)
    histogram = L.RGBuvHistogram().to(device)
    generator_params = [p for p in model.parameters() if p.requires_grad] + list(aux.parameters())
    optimizers = {"total": adam(generator_params, cfg),
                  "discriminator": adam(discriminator.parameters(), cfg, betas=(0.5, 0.999))}
    return TrainParts(model, loss_vgg, optimizers,
                      modules={"aux": aux, "discriminator": discriminator, "histogram": histogram})


def _content_code(feat4_1: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(mean_variance_norm(feat4_1), 2).flatten(1)


def neat_training_terms(parts: TrainParts, cfg: dict[str, Any], content: Tensor, style: Tensor,
                        step: int) -> dict[str, Tensor]:
    """NeAT generator terms (weighted, with ``"total"``) and the discriminator's loss ``"discriminator"``.

    The batch is used twice: ``out_i = G(c_i, s_i)`` and ``swap_i = G(c_{i-1}, s_i)``, so each style
    has a group of two outputs plus its source image, and each content a group of two outputs
    plus itself, for the contrastive terms. The discriminator judges detached output patches, so
    its loss has its own graph; the generator's update does not change it.
    """
    model, vgg = parts.model, parts.loss_vgg
    aux, disc = parts.modules["aux"], parts.modules["discriminator"]
    weights = {**NEAT_LOSS_WEIGHTS, **cfg["weights"]}
    b = content.shape[0]
    base = content
    if cfg["blur"]:
        sigma = torch.rand(b, generator=step_generator(cfg["seed"], step, 2)) * cfg["blur_sigma_max"]
        from ..stylizers.neat import gaussian_blur

        base = gaussian_blur(content, sigma.to(content.device), cfg["blur_sigma_max"])
    out = model.edit(base, style)
    swap = model.edit(base.roll(1, dims=0), style)
    with torch.no_grad():
        content_feats = vgg.taps(content, ALL_LAYERS)
        style_feats = vgg.taps(style, ALL_LAYERS)
    out_feats, swap_feats = vgg.taps(out, ALL_LAYERS), vgg.taps(swap, ALL_LAYERS)
    layers = [ALL_LAYERS.index(lv) for lv in L.PAMA_LOSS_LAYERS]
    pick = lambda feats: [feats[i] for i in layers]  # noqa: E731
    pama = L.pama_stage_loss(pick(out_feats), pick(content_feats), pick(style_feats), out, style,
                             L.PAMA_STAGE_WEIGHTS[-1], parts.modules["histogram"])
    terms = {f"pama_{k}": v for k, v in pama.items() if k != "total"}
    terms["pama"] = weights["pama"] * pama["total"]

    ids = torch.arange(b, device=content.device)
    style_codes = aux.style_head(torch.cat([L.style_descriptor(f) for f in (out_feats, swap_feats, style_feats)]))
    terms["contrast_style"] = weights["contrast_style"] * L.group_contrastive_loss(
        style_codes, torch.cat([ids, ids, ids]), NEAT_CONTRAST_TEMPERATURE)
    content_codes = aux.content_head(torch.cat([_content_code(f[3]) for f in (out_feats, swap_feats, content_feats)]))
    terms["contrast_content"] = weights["contrast_content"] * L.group_contrastive_loss(
        content_codes, torch.cat([ids, (ids - 1) % b, ids]), NEAT_CONTRAST_TEMPERATURE)

    patch = min(cfg["patch_size"], cfg["size"] // 2)
    count = min(cfg["patches"], (cfg["size"] // patch) ** 2)
    fake_patches, _ = L.sobel_edge_patches(out, patch, count)
    style_patches, _ = L.sobel_edge_patches(style, patch, count)
    # Frozen while judging the generator, so the generator's backward leaves it without gradients.
    disc.requires_grad_(False)
    terms["adversarial"] = weights["adversarial"] * L.generator_adversarial_loss(disc(fake_patches, style_patches))
    disc.requires_grad_(True)

    identity_content = model.edit(content, content)
    identity_style = model.edit(style, style)
    terms["identity_gram"] = weights["identity_gram"] * (
        L.gram_loss(vgg.taps(identity_content, ALL_LAYERS), list(content_feats))
        + L.gram_loss(vgg.taps(identity_style, ALL_LAYERS), list(style_feats)))
    terms["total"] = sum(terms[k] for k in ("pama", "contrast_style", "contrast_content", "adversarial",
                                            "identity_gram"))
    fake_patches = fake_patches.detach()
    terms["discriminator"] = L.discriminator_loss(disc(style_patches, style_patches), disc(fake_patches, style_patches))
    return terms


NEAT = Recipe(spec=_neat_spec, build=_build_neat, losses=neat_training_terms, check=_check_neat,
              defaults={**_DEFAULTS, "blur": True, "blur_sigma_max": 2.0, "patch_size": 32, "patches": 8,
                        "weights": {}})


__all__ = ["PAMA", "NEAT", "neat_training_terms", "NEAT_LOSS_WEIGHTS"]
