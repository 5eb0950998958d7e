"""Train a stylizer (AdaIN, SANet, PAMA, NeAT) on your own content and style folders.

One loop serves every method. A method brings a :class:`Recipe`: its default settings, the
optimisers (and any extra trained modules) it needs, and its loss terms per step. The loop owns
everything else:

- data: each step draws its content and style crops from generators seeded by ``(seed, step)``,
  so a resumed run sees exactly the images an uninterrupted one would;
- Adam with the inverse learning-rate decay ``lr / (1 + lr_decay * step)`` of the original code
  bases, applied to every optimiser of the recipe;
- an atomic ``checkpoint.pt`` (modules, optimisers, step, torch RNG, resume-relevant settings;
  read back with ``weights_only=True``), a ``metrics.jsonl`` log cut back to the checkpoint's step
  on resume, and the resolved ``config.json``;
- a final safetensors export, ``out_dir/<method>.safetensors``, that :func:`nstzoo.load_stylizer`
  reads (``weights=...``) with the factory options stored beside the tensors.

AdaIN and SANet losses live here (VGG features from a frozen normalised VGG-19 loaded from ``vgg``):

- AdaIN (Huang & Belongie 2017): ``content_weight * Lc + style_weight * Ls`` with Lc the MSE between
  the output's relu4_1 and the AdaIN target, Ls the MSE of channel means and stds over
  relu1_1..relu4_1.
- SANet (Park & Lee 2019): ``1*Lc + 3*Ls + 50*Lid1 + 1*Lid2``: Lc on normalised relu4_1 and relu5_1,
  Ls over relu1_1..relu5_1, identity losses on pixels (Lid1) and features (Lid2) of the content and
  style stylised with themselves.

PAMA and NeAT recipes are in :mod:`nstzoo.train.recipes_pama_neat`. CAST is not trainable here
(GAN + contrastive training, see :mod:`nstzoo.stylizers.cast`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.folder import list_images
from .data.steps import distinct_draw, load_random_crops
from .errors import ConfigError
from .nn.checkpoints import read_official_state
from .nn.stats import adain, mean_std, mean_variance_norm
from .nn.vgg import TAPS, NormalisedVGG19, random_official_vgg_state, select_vgg_keys
from .specs import StylizerSpec
from .files import atomic_write, drop_jsonl_records
from .weights import read_checkpoint, save_safetensors

LAYERS = list(TAPS)  # relu1_1 .. relu5_1
REQUIRED = ("content_dir", "style_dir", "out_dir")
# Settings every method understands; a recipe may change these defaults and add its own keys.
DEFAULTS: dict[str, Any] = {
    "steps": 1000, "batch_size": 4, "size": 256, "load_size": None, "lr": 1e-4, "lr_decay": 5e-5,
    "vgg": None, "random_init_vgg": False, "resume": False, "seed": 0, "device": "cpu",
    "checkpoint_every": 500, "options": {},
}
# Settings a resumed run may change; every other one must equal the checkpoint's, since it shapes
# the model, the data or the losses (steps may grow, files may move, the device may change).
MAY_CHANGE_ON_RESUME = frozenset({"steps", "checkpoint_every", "resume", "device", "out_dir", "content_dir",
                                  "style_dir", "vgg", "random_init_vgg"})
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


# ----------------------------------------------------------------------------- the recipe interface
@dataclass
class TrainParts:
    """What a run trains and consults, as a recipe builds it.

    ``optimizers`` maps the name of a loss term to the optimiser that minimises it; each step they
    are stepped in this order on the terms the recipe's ``losses`` returned ("total" first; NeAT
    adds "discriminator"). Each of those terms needs its own autograd graph (share only detached
    tensors), because one term's backward frees its graph.
    ``modules`` holds further modules the losses use (NeAT's projection heads and discriminator,
    PAMA's colour histogram); they are saved in checkpoints with the model.
    """

    model: nn.Module
    loss_vgg: NormalisedVGG19
    optimizers: dict[str, torch.optim.Optimizer]
    modules: dict[str, nn.Module] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """How one method trains in the shared loop.

    Attributes:
        spec: returns the plugin's :class:`StylizerSpec` (its ``factory`` builds the model from
            ``options``, its ``default_options`` complete the exported config). A function, because
            the plugins import this module lazily and it must not import them at load time.
        build: ``(model, loss_vgg, cfg) -> TrainParts`` with the optimisers; the model arrives
            seeded, on the device, with its VGG encoder loaded and frozen.
        losses: ``(parts, cfg, content, style, step) -> {name: scalar}`` for crops ``[B,3,size,size]``
            in [0, 1]; must hold a key per optimiser (at least ``"total"``); everything is logged.
        defaults: the method's own keys, and its defaults for shared ones.
        load_scale: when ``load_size`` is unset, the shorter side before cropping is
            ``load_scale * size``.
        check: optional validation of the resolved config; raises :class:`ConfigError`.
    """

    spec: Callable[[], StylizerSpec]
    build: Callable[[nn.Module, NormalisedVGG19, dict[str, Any]], TrainParts]
    losses: Callable[[TrainParts, dict[str, Any], Tensor, Tensor, int], dict[str, Tensor]]
    defaults: dict[str, Any] = field(default_factory=dict)
    load_scale: int = 1
    check: Callable[[dict[str, Any]], None] | None = None


def adam(params: Any, cfg: dict[str, Any], **kwargs: Any) -> torch.optim.Adam:
    """Adam at the configured learning rate (the loop decays it every step)."""
    return torch.optim.Adam(params, lr=cfg["lr"], **kwargs)


def build_generator_only(model: nn.Module, loss_vgg: NormalisedVGG19, cfg: dict[str, Any]) -> TrainParts:
    """One Adam over every parameter of the model that is not frozen (all but the VGG encoder)."""
    return TrainParts(model, loss_vgg, {"total": adam([p for p in model.parameters() if p.requires_grad], cfg)})


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A generator that depends only on (seed, step, stream): resuming replays the same draws.

    Streams in use: 0 content crops, 1 style crops, 2 NeAT's blur strengths.
    """
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 8 + stream)


# ----------------------------------------------------------------------------- AdaIN and SANet
def _mse(a: Tensor, b: Tensor) -> Tensor:
    return F.mse_loss(a, b)


def _style_loss(feats: list[Tensor], targets: list[Tensor]) -> Tensor:
    loss = feats[0].new_zeros(())
    for feat, target in zip(feats, targets):
        (m1, s1), (m2, s2) = mean_std(feat), mean_std(target)
        loss = loss + _mse(m1, m2) + _mse(s1, s2)
    return loss


def adain_losses(parts: TrainParts, cfg: dict[str, Any], content: Tensor, style: Tensor,
                 step: int) -> dict[str, Tensor]:
    """AdaIN losses for a batch of crops in [0, 1]; returns named scalars including ``total``."""
    model, vgg = parts.model, parts.loss_vgg
    layers = LAYERS[:4]
    style_feats = vgg.taps(style, layers)
    target = adain(vgg.taps(content, ["relu4_1"])[0], style_feats[-1])
    output_feats = vgg.taps(model.decoder(target), layers)
    content_loss = _mse(output_feats[-1], target)
    style_loss = _style_loss(output_feats, style_feats)
    total = cfg["content_weight"] * content_loss + cfg["style_weight"] * style_loss
    return {"content": content_loss, "style": style_loss, "total": total}


def sanet_losses(parts: TrainParts, cfg: dict[str, Any], content: Tensor, style: Tensor,
                 step: int) -> dict[str, Tensor]:
    """SANet losses (1 Lc + 3 Ls + 50 Lid1 + 1 Lid2, content weight scaling Lc)."""
    model, vgg = parts.model, parts.loss_vgg
    content_feats, style_feats = vgg.taps(content, LAYERS), vgg.taps(style, LAYERS)

    def decode(c: list[Tensor], s: list[Tensor]) -> Tensor:
        return model.decoder(model.transform(c[3], s[3], c[4], s[4]))

    output_feats = vgg.taps(decode(content_feats, style_feats), LAYERS)
    content_loss = sum(_mse(mean_variance_norm(output_feats[i]), mean_variance_norm(content_feats[i]))
                       for i in (3, 4))
    style_loss = _style_loss(output_feats, style_feats)
    content_id, style_id = decode(content_feats, content_feats), decode(style_feats, style_feats)
    identity1 = _mse(content_id, content) + _mse(style_id, style)
    identity2 = sum(_mse(a, b) for a, b in zip(vgg.taps(content_id, LAYERS), content_feats)) + \
        sum(_mse(a, b) for a, b in zip(vgg.taps(style_id, LAYERS), style_feats))
    total = cfg["content_weight"] * content_loss + cfg["style_weight"] * style_loss + 50 * identity1 + identity2
    return {"content": content_loss, "style": style_loss, "identity1": identity1, "identity2": identity2,
            "total": total}


def _adain_spec() -> StylizerSpec:
    from .stylizers.adain import SPEC

    return SPEC


def _sanet_spec() -> StylizerSpec:
    from .stylizers.sanet import SPEC

    return SPEC


# The original scripts resize the shorter side to 512 and crop 256: load_scale 2.
_VGG_DEFAULTS = {"steps": 160_000, "batch_size": 8, "checkpoint_every": 1000, "content_weight": 1.0}
ADAIN = Recipe(spec=_adain_spec, build=build_generator_only, losses=adain_losses,
               defaults={**_VGG_DEFAULTS, "style_weight": 10.0}, load_scale=2)
SANET = Recipe(spec=_sanet_spec, build=build_generator_only, losses=sanet_losses,
               defaults={**_VGG_DEFAULTS, "style_weight": 3.0}, load_scale=2)


def recipes() -> dict[str, Recipe]:
    """Every trainable method's recipe, by stylizer name."""
    from .train.recipes_pama_neat import NEAT, PAMA

    return {"adain": ADAIN, "sanet": SANET, "pama": PAMA, "neat": NEAT}


# ----------------------------------------------------------------------------- config
def resolve_config(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and values checked; a bad key or value is a :class:`ConfigError` naming it.

    A value of ``None`` means "the default" (the CLI passes unset options as ``None``).
    """
    known_recipes = recipes()
    if method not in known_recipes:
        raise ConfigError(f"stylizer {method!r} cannot be trained here; trainable: {', '.join(known_recipes)}")
    recipe = known_recipes[method]
    defaults = {**DEFAULTS, **recipe.defaults}
    unknown = sorted(set(config) - set(defaults) - set(REQUIRED))
    if unknown:
        raise ConfigError(f"{method} training: unknown option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted([*REQUIRED, *defaults]))}")
    missing = [k for k in REQUIRED if config.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"{method} training: option(s) {', '.join(missing)} must be set")
    cfg = {**defaults, **{k: v for k, v in config.items() if v is not None or k not in defaults}}
    for key in ("content_dir", "style_dir", "out_dir", "vgg"):
        cfg[key] = None if cfg[key] is None else str(cfg[key])
    for key in ("steps", "batch_size", "size", "checkpoint_every"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{method} training: {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["size"] % 16:
        raise ConfigError(f"{method} training: size must be a multiple of 16, got {cfg['size']}")
    cfg["load_size"] = int(cfg["load_size"] or recipe.load_scale * cfg["size"])
    if cfg["load_size"] < cfg["size"]:
        raise ConfigError(f"{method} training: load_size ({cfg['load_size']}) must be >= size ({cfg['size']})")
    try:  # YAML reads "1e-4" (no dot) as a string
        cfg["lr"] = float(cfg["lr"])
    except (TypeError, ValueError):
        cfg["lr"] = math.nan
    if not cfg["lr"] > 0:
        raise ConfigError(f"{method} training: lr must be a number > 0, got {config.get('lr')!r}")
    if not isinstance(cfg["options"], dict):
        raise ConfigError(f"{method} training: options must be a mapping of factory options, got {cfg['options']!r}")
    if cfg["vgg"] is None and not cfg["random_init_vgg"]:
        raise ConfigError(f"{method} training needs the normalised VGG-19 for its losses: "
                          "set vgg to vgg_normalised.pth",
                          hint="or set random_init_vgg for a pipeline test (the result will not stylise well)")
    if recipe.check is not None:
        recipe.check(cfg)
    cfg["method"] = method
    return cfg


# ----------------------------------------------------------------------------- data
class _StepSampler:
    """Batches ``[B,3,size,size]`` in [0, 1] of random crops from one folder, drawn per (seed, step).

    Shorter side resized to ``load_size`` then a random crop, as in the original training scripts.
    A batch holds distinct images when the folder has enough (a contrastive "negative" must not be
    its anchor); unreadable files are skipped and redrawn (:func:`nstzoo.data.steps.load_random_crops`).
    """

    def __init__(self, root: str, stream: int, cfg: dict[str, Any]):
        self.paths = list_images(root)
        self.stream, self.seed = stream, cfg["seed"]
        self.batch_size, self.size, self.load_size = cfg["batch_size"], cfg["size"], cfg["load_size"]
        self.warned: set[str] = set()

    def batch(self, step: int) -> Tensor:
        generator = step_generator(self.seed, step, self.stream)
        picks = distinct_draw(len(self.paths), self.batch_size, generator)
        images, _ = load_random_crops(self.paths, picks, self.size, generator, [], load_size=self.load_size,
                                      warned=self.warned)
        return images


# ----------------------------------------------------------------------------- building
def _load_vgg_state(cfg: dict[str, Any]) -> dict[str, Tensor]:
    if cfg["vgg"] is not None:
        return select_vgg_keys(read_official_state(Path(cfg["vgg"])), upto="relu5_1", source=cfg["vgg"])
    # He-scaled random weights keep deep features alive (PyTorch's default init shrinks them
    # towards zero by relu5_1), so every loss term carries signal in pipeline tests.
    full = random_official_vgg_state(torch.Generator().manual_seed(cfg["seed"]))
    return select_vgg_keys(full, upto="relu5_1", source="random VGG")


def _build(recipe: Recipe, cfg: dict[str, Any], device: torch.device) -> TrainParts:
    """The recipe's parts around a seeded model whose VGG encoder is the loss network's first slots."""
    torch.manual_seed(cfg["seed"])
    vgg_state = _load_vgg_state(cfg)
    loss_vgg = NormalisedVGG19("relu5_1")
    loss_vgg.load_state_dict(vgg_state)
    loss_vgg.to(device).eval().requires_grad_(False)
    try:
        model = recipe.spec().factory(**cfg["options"])
    except TypeError as exc:
        raise ConfigError(f"{cfg['method']} training: bad options {cfg['options']!r} ({exc})") from exc
    model.encoder.load_state_dict({k: v for k, v in vgg_state.items() if int(k.split(".")[0]) < len(model.encoder)})
    model.encoder.requires_grad_(False)
    return recipe.build(model.to(device), loss_vgg, cfg)


# ----------------------------------------------------------------------------- checkpoints and log
def _resume_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in MAY_CHANGE_ON_RESUME}


def _save_checkpoint(path: Path, parts: TrainParts, step: int, cfg: dict[str, Any]) -> None:
    state = {
        "step": step, "config": _resume_config(cfg), "torch_rng": torch.get_rng_state(),
        "modules": {name: module.state_dict() for name, module in {"model": parts.model, **parts.modules}.items()},
        "optimizers": {name: optimizer.state_dict() for name, optimizer in parts.optimizers.items()},
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _resume(path: Path, parts: TrainParts, cfg: dict[str, Any]) -> int:
    """Restore ``parts`` and the torch RNG from ``path``; returns the step to continue from."""
    saved = read_checkpoint(path)  # weights_only=True
    if not isinstance(saved, dict) or "config" not in saved:
        raise ConfigError(f"{path}: not a checkpoint of this training loop (an older nstzoo wrote it?)",
                          hint="use a new out_dir")
    now, then = _resume_config(cfg), saved["config"]
    differing = [f"{k}: checkpoint {then.get(k)!r} != now {now.get(k)!r}"
                 for k in sorted(set(now) | set(then)) if then.get(k) != now.get(k)]
    if differing:
        raise ConfigError(f"{path}: cannot resume a run with different settings ({'; '.join(differing)})",
                          hint="use a new out_dir, or the original settings")
    for name, module in {"model": parts.model, **parts.modules}.items():
        module.load_state_dict(saved["modules"][name])
    for name, optimizer in parts.optimizers.items():
        optimizer.load_state_dict(saved["optimizers"][name])
    torch.set_rng_state(saved["torch_rng"])
    return int(saved["step"])


# ----------------------------------------------------------------------------- the loop
def train_stylizer(method: str, config: dict[str, Any]) -> Path:
    """Train ``method`` (a key of :func:`recipes`) and export its weights; returns the safetensors path.

    Config keys: content_dir, style_dir, out_dir (required); steps, batch_size, size (crop side,
    multiple of 16), load_size (shorter side before cropping; default size, or 2*size for AdaIN
    and SANet), lr, lr_decay, vgg (path to vgg_normalised.pth or a safetensors copy),
    random_init_vgg (pipeline tests only), resume, seed, device, checkpoint_every, options (factory
    options of the stylizer); plus the method's own keys (AdaIN/SANet: content_weight,
    style_weight; PAMA: color; NeAT: blur, blur_sigma_max, patch_size, patches, weights).
    Defaults differ per method: AdaIN/SANet follow their papers' schedules (160k steps, batch 8,
    resume off), PAMA/NeAT are set for short runs (1000 steps, batch 4, resume on).
    """
    cfg = resolve_config(method, config)
    recipe = recipes()[method]
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg["device"])
    parts = _build(recipe, cfg, device)
    contents, styles = _StepSampler(cfg["content_dir"], 0, cfg), _StepSampler(cfg["style_dir"], 1, cfg)

    checkpoint, metrics = out_dir / CHECKPOINT, out_dir / METRICS
    step = 0
    if cfg["resume"] and checkpoint.is_file():
        step = _resume(checkpoint, parts, cfg)
        # Records are numbered by completed steps here: keep those the checkpoint includes.
        drop_jsonl_records(metrics, lambda r: r["step"] <= step)
    elif metrics.exists():
        metrics.unlink()
    atomic_write(out_dir / "config.json",
                 lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2, sort_keys=True)))

    parts.model.train()
    with metrics.open("a") as log:
        while step < cfg["steps"]:
            lr = cfg["lr"] / (1.0 + cfg["lr_decay"] * step)
            for optimizer in parts.optimizers.values():
                for group in optimizer.param_groups:
                    group["lr"] = lr
            content, style = contents.batch(step).to(device), styles.batch(step).to(device)
            losses = recipe.losses(parts, cfg, content, style, step)
            for name, optimizer in parts.optimizers.items():
                optimizer.zero_grad(set_to_none=True)
                losses[name].backward()
                optimizer.step()
            step += 1
            record = {"step": step, "lr": lr, **{k: float(v.detach()) for k, v in losses.items()}}
            if not all(math.isfinite(v) for v in record.values()):
                raise FloatingPointError(f"{method} training diverged at step {step}: {record}")
            log.write(json.dumps(record) + "\n")
            log.flush()
            if step % cfg["checkpoint_every"] == 0 or step == cfg["steps"]:
                _save_checkpoint(checkpoint, parts, step, cfg)

    parts.model.eval()
    options = {**recipe.spec().default_options, **cfg["options"]}
    return save_safetensors(out_dir / f"{method}.safetensors", parts.model.state_dict(), kind="stylizer",
                            name=method, config=options)


__all__ = ["train_stylizer", "resolve_config", "recipes", "Recipe", "TrainParts", "adam", "build_generator_only",
           "step_generator", "adain_losses", "sanet_losses", "ADAIN", "SANET"]
