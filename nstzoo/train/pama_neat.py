"""Training PAMA and NeAT on folders of content and style images (``nstzoo stylizers train pama|neat``).

Config keys (a dict; unknown keys are a :class:`ConfigError`):

- ``content_dir``, ``style_dir`` (required): folders of images (jpg/png/webp/bmp, searched recursively).
- ``out_dir`` (required): run folder: ``checkpoint.pt`` (atomic), ``metrics.jsonl``, ``config.json``,
  ``<name>.safetensors`` (the export, loadable with ``load_stylizer(name, weights=...)``).
- ``steps`` (1000), ``batch_size`` (4, at least 2 for NeAT), ``size`` (256: shorter side resized to
  ``size`` then a random ``size x size`` crop; a multiple of 16), ``lr`` (1e-4, Adam, decayed
  ``lr / (1 + 5e-5 * step)`` as PAMA), ``seed`` (0), ``device`` ("cpu").
- ``vgg``: ``vgg_normalised.pth`` (or a safetensors copy) for the frozen encoder and the loss
  network; or ``random_init_vgg: true`` for pipeline tests.
- ``resume`` (true): continue from ``out_dir/checkpoint.pt`` if present; the result equals an
  uninterrupted run (data order and corruption strengths are drawn from ``(seed, step)``).
- ``checkpoint_every`` (500): steps between checkpoints (one is always written at the end).
- ``options``: factory options of the stylizer (e.g. NeAT ``levels``, ``stages``).
- PAMA: ``color`` (true): the RGB-uv histogram colour loss.
- NeAT: ``blur`` (true): train on blurred contents (random sigma in [0, ``blur_sigma_max``=2]);
  ``patch_size`` (32) and ``patches`` (8) for the Sobel-selected discriminator patches;
  ``weights``: overrides of :data:`NEAT_LOSS_WEIGHTS`.

NeAT needs a second optimiser (its co-occurrence discriminator), which is why this loop exists
beside the generic one; see the report for what to generalise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..nn.stats import mean_variance_norm
from ..nn.vgg import NormalisedVGG19, random_official_vgg_state, select_vgg_keys
from ..weights import atomic_write, read_checkpoint, save_safetensors, unwrap_state_dict
from . import losses_pama as L

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
DEFAULTS: dict[str, Any] = {
    "content_dir": None, "style_dir": None, "out_dir": None, "steps": 1000, "batch_size": 4, "size": 256,
    "lr": 1e-4, "vgg": None, "random_init_vgg": False, "resume": True, "seed": 0, "device": "cpu",
    "checkpoint_every": 500, "options": {},
}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "pama": {"color": True},
    "neat": {"blur": True, "blur_sigma_max": 2.0, "patch_size": 32, "patches": 8, "weights": {}},
}
# NeAT loss weights: the paper names the terms but not their weights; these are nstzoo's choices.
NEAT_LOSS_WEIGHTS = {"pama": 1.0, "contrast_style": 0.3, "contrast_content": 0.3, "adversarial": 0.1,
                     "identity_gram": 1000.0}
NEAT_CONTRAST_TEMPERATURE = 0.1
ALL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


# ----------------------------------------------------------------------------- config and data
def resolve_config(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and every key checked; raises :class:`ConfigError` naming a bad key."""
    allowed = {**DEFAULTS, **METHOD_DEFAULTS[method]}
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"{method} training: unknown config key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(allowed))}")
    cfg = {**allowed, **config}
    for key in ("content_dir", "style_dir", "out_dir"):
        if not cfg[key]:
            raise ConfigError(f"{method} training: config key {key!r} is required")
    for key in ("steps", "batch_size", "size", "checkpoint_every"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{method} training: {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["size"] % 16:
        raise ConfigError(f"{method} training: size must be a multiple of 16, got {cfg['size']}")
    if method == "neat" and cfg["batch_size"] < 2:
        raise ConfigError("neat training: batch_size must be >= 2 (contrastive groups need two images)")
    if not float(cfg["lr"]) > 0:
        raise ConfigError(f"{method} training: lr must be > 0, got {cfg['lr']!r}")
    if cfg["vgg"] is None and not cfg["random_init_vgg"]:
        raise ConfigError(f"{method} training: config key 'vgg' (path to vgg_normalised.pth) is required",
                          hint="set random_init_vgg: true only for pipeline tests")
    if method == "neat":
        bad = sorted(set(cfg["weights"]) - set(NEAT_LOSS_WEIGHTS))
        if bad:
            raise ConfigError(f"neat training: unknown loss weight(s) {', '.join(bad)}; "
                              f"known: {', '.join(NEAT_LOSS_WEIGHTS)}")
    return cfg


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def load_crop(path: Path, size: int, generator: torch.Generator) -> Tensor:
    """Image -> RGB ``[3,size,size]`` in [0, 1]: shorter side to ``size``, random crop."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    try:
        with Image.open(path) as img:
            image = pil_to_tensor(img.convert("RGB")).float() / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    image = F.interpolate(image[None], size=new, mode="bilinear", align_corners=False, antialias=True)[0]
    top = int(torch.randint(new[0] - size + 1, (1,), generator=generator))
    left = int(torch.randint(new[1] - size + 1, (1,), generator=generator))
    return image[:, top:top + size, left:left + size].clamp(0, 1)


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A generator that depends only on (seed, step, stream): resuming replays the same draws."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 8 + stream)


def sample_batch(files: list[Path], cfg: dict[str, Any], step: int, stream: int) -> Tensor:
    gen = step_generator(cfg["seed"], step, stream)
    # Without replacement when the folder is large enough: a batch never holds one image twice,
    # which would make a contrastive "negative" identical to its anchor.
    if len(files) >= cfg["batch_size"]:
        picks = torch.randperm(len(files), generator=gen)[: cfg["batch_size"]].tolist()
    else:
        picks = torch.randint(len(files), (cfg["batch_size"],), generator=gen).tolist()
    return torch.stack([load_crop(files[i], cfg["size"], gen) for i in picks])


# ----------------------------------------------------------------------------- building
def build_vgg(cfg: dict[str, Any]) -> NormalisedVGG19:
    """The frozen loss network (to relu5_1), from ``vgg`` or seeded random weights."""
    vgg = NormalisedVGG19("relu5_1")
    if cfg["vgg"] is not None:
        path = Path(cfg["vgg"])
        state = unwrap_state_dict(read_checkpoint(path), path)
        vgg.load_state_dict(select_vgg_keys(state, upto="relu5_1", source=str(path)))
    else:
        # He-scaled random weights keep deep features alive (PyTorch's default init shrinks them
        # towards zero by relu5_1), so every loss term carries signal in pipeline tests.
        generator = torch.Generator().manual_seed(cfg["seed"])
        vgg.load_state_dict(select_vgg_keys(random_official_vgg_state(generator), upto="relu5_1"))
    return vgg.eval().requires_grad_(False)


class _NeATAux(nn.Module):
    """NeAT's training-only modules: projection heads (trained with the generator)."""

    def __init__(self):
        super().__init__()
        style_dim = 2 * sum({"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}.values())
        self.style_head = L.ProjectionHead(style_dim)
        self.content_head = L.ProjectionHead(512 * 4)


def build(method: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Model, loss network, auxiliaries and optimisers, deterministically from ``cfg['seed']``."""
    from ..plugins.neat import NeATStylizer
    from ..plugins.pama import PAMAStylizer

    torch.manual_seed(cfg["seed"])
    device = torch.device(cfg["device"])
    vgg = build_vgg(cfg)
    factory = PAMAStylizer if method == "pama" else NeATStylizer
    try:
        model = factory(**cfg["options"])
    except TypeError as exc:
        raise ConfigError(f"{method} training: bad options {cfg['options']!r} ({exc})") from exc
    # The stylizer's frozen encoder is the first slots of the loss network.
    model.encoder.load_state_dict({k: v for k, v in vgg.state_dict().items()
                                   if int(k.split(".")[0]) < len(model.encoder)})
    model.encoder.requires_grad_(False)
    parts: dict[str, Any] = {"model": model.to(device), "vgg": vgg.to(device), "device": device}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if method == "pama":
        parts["histogram"] = L.RGBuvHistogram().to(device) if cfg["color"] else None
    else:
        parts["aux"] = _NeATAux().to(device)
        parts["discriminator"] = L.CooccurrenceDiscriminator().to(device)
        parts["histogram"] = L.RGBuvHistogram().to(device)
        trainable += list(parts["aux"].parameters())
        parts["opt_d"] = torch.optim.Adam(parts["discriminator"].parameters(), lr=cfg["lr"], betas=(0.5, 0.999))
    parts["opt"] = torch.optim.Adam(trainable, lr=cfg["lr"])
    return parts


# ----------------------------------------------------------------------------- NeAT objective
def _content_code(feat4_1: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(mean_variance_norm(feat4_1), 2).flatten(1)


def neat_training_terms(parts: dict[str, Any], cfg: dict[str, Any], content: Tensor, style: Tensor,
                        step: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """NeAT generator terms (weighted, with ``"total"``) and the patches the discriminator needs.

    The batch is used twice: ``out_i = G(c_i, s_i)`` and ``swap_i = G(c_{i-1}, s_i)``, so each style
    has a group of two outputs plus its source image, and each content a group of two outputs
    plus itself, for the contrastive terms.
    """
    model, vgg, aux, disc = parts["model"], parts["vgg"], parts["aux"], parts["discriminator"]
    weights = {**NEAT_LOSS_WEIGHTS, **cfg["weights"]}
    b = content.shape[0]
    base = content
    if cfg["blur"]:
        sigma = torch.rand(b, generator=step_generator(cfg["seed"], step, 2)) * cfg["blur_sigma_max"]
        from ..plugins.neat import gaussian_blur

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
                             L.PAMA_STAGE_WEIGHTS[-1], parts["histogram"])
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
    return terms, {"fake": fake_patches.detach(), "real": style_patches}


# ----------------------------------------------------------------------------- the loop
def _checkpoint_state(parts: dict[str, Any], step: int) -> dict[str, Any]:
    state = {"step": step, "model": parts["model"].state_dict(), "opt": parts["opt"].state_dict()}
    for key in ("aux", "discriminator", "opt_d"):
        if key in parts:
            state[key] = parts[key].state_dict()
    return state


def _restore(parts: dict[str, Any], state: dict[str, Any]) -> int:
    for key in ("model", "opt", "aux", "discriminator", "opt_d"):
        if key in parts:
            parts[key].load_state_dict(state[key])
    return int(state["step"])


def _batches(method: str, cfg: dict[str, Any], start: int) -> Iterator[tuple[int, Tensor, Tensor]]:
    contents, styles = list_images(cfg["content_dir"]), list_images(cfg["style_dir"])
    for step in range(start, cfg["steps"]):
        yield step, sample_batch(contents, cfg, step, 0), sample_batch(styles, cfg, step, 1)


def train_pama_neat(method: str, config: dict[str, Any]) -> Path:
    """Train ``method`` ("pama" or "neat") as configured; returns the exported safetensors path."""
    from ..plugins.pama import pama_training_terms

    if method not in METHOD_DEFAULTS:
        raise ConfigError(f"train_pama_neat: method must be 'pama' or 'neat', got {method!r}")
    cfg = resolve_config(method, dict(config))
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = build(method, cfg)
    model, device = parts["model"], parts["device"]
    checkpoint = out_dir / "checkpoint.pt"
    start = 0
    if cfg["resume"] and checkpoint.is_file():
        start = _restore(parts, torch.load(checkpoint, map_location=device, weights_only=True))
    atomic_write(out_dir / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(
        {"method": method, **{k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()}}, indent=2)))
    model.train()
    metrics = open(out_dir / "metrics.jsonl", "a")
    try:
        for step, content, style in _batches(method, cfg, start):
            content, style = content.to(device), style.to(device)
            lr = cfg["lr"] / (1.0 + 5e-5 * step)
            for opt in (parts["opt"], parts.get("opt_d")):
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = lr
            if method == "pama":
                terms = pama_training_terms(model, parts["vgg"], content, style, parts["histogram"])
                patches = None
            else:
                terms, patches = neat_training_terms(parts, cfg, content, style, step)
            parts["opt"].zero_grad(set_to_none=True)
            terms["total"].backward()
            parts["opt"].step()
            if patches is not None:
                disc = parts["discriminator"]
                d_loss = L.discriminator_loss(disc(patches["real"], patches["real"]),
                                              disc(patches["fake"], patches["real"]))
                parts["opt_d"].zero_grad(set_to_none=True)
                d_loss.backward()
                parts["opt_d"].step()
                terms["discriminator"] = d_loss.detach()
            record = {"step": step + 1, "lr": lr, **{k: float(v.detach()) for k, v in terms.items()}}
            if not all(math.isfinite(v) for v in record.values()):
                raise FloatingPointError(f"{method} training: non-finite loss at step {step + 1}: {record}")
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            if (step + 1) % cfg["checkpoint_every"] == 0 or step + 1 == cfg["steps"]:
                state = _checkpoint_state(parts, step + 1)
                atomic_write(checkpoint, lambda tmp: torch.save(state, tmp))
    finally:
        metrics.close()
    model.eval()
    options = {**_factory_defaults(method), **cfg["options"]}
    return save_safetensors(out_dir / f"{method}.safetensors", model.state_dict(), kind="stylizer", name=method,
                            config=options)


def _factory_defaults(method: str) -> dict[str, Any]:
    from ..plugins.neat import SPEC as NEAT_SPEC
    from ..plugins.pama import SPEC as PAMA_SPEC

    return dict((PAMA_SPEC if method == "pama" else NEAT_SPEC).default_options)


__all__ = ["train_pama_neat", "resolve_config", "neat_training_terms", "NEAT_LOSS_WEIGHTS"]
