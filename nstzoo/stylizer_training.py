"""The generic stylizer-training loop: trains any stylizer whose plugin declares a :class:`~nstzoo.specs.Recipe`.

The loop knows no paper and imports no plugin. A recipe brings the objective (its parts and loss
terms) and its own options; the loop owns everything else:

- configuration: :class:`StylizerTrainConfig` (generic settings) plus the recipe's options dataclass,
  both through the one config system (YAML, ``--set``, unknown key -> error naming the closest);
- data: each step draws its content and style crops from generators seeded by ``(seed, step)``, so a
  resumed run sees exactly the images an uninterrupted one would; unreadable files are skipped;
- Adam's inverse learning-rate decay ``lr / (1 + lr_decay * step)`` of the original code bases,
  applied to every optimiser of the recipe;
- the run folder, checkpoints, resume and divergence through the run engine (:mod:`nstzoo.runs`);
- the export: ``out/<name>.safetensors`` with the factory options in its header, which
  :func:`nstzoo.load_stylizer` reads (``weights=...``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import build_config_data, from_dict, resolve_device, to_dict
from .data.folder import list_images
from .data.steps import distinct_draw, load_random_crops
from .contract import plugin_code
from .errors import ConfigError, PluginError
from .recipes import RecipeContext, step_generator
from .runs import RunFolder, TrainingDiverged, all_finite
from .specs import Recipe, StylizerSpec, TrainParts
from .weights import save_safetensors


@dataclass
class StylizerTrainConfig:
    """Settings of ``nstzoo stylizers train NAME``; a recipe changes the defaults it needs."""

    stylizer: str = ""
    """The stylizer being trained (set from the command's NAME)."""
    out: str = ""
    """Run folder: config.yaml, meta.json, metrics.jsonl, checkpoints/, <name>.safetensors."""
    content: list[str] = field(default_factory=list)
    """Folders of content images (searched recursively)."""
    style: list[str] = field(default_factory=list)
    """Folders of style images."""
    steps: int = 1000
    batch_size: int = 4
    size: int = 256
    """Training crop side in pixels (a multiple of 16)."""
    load_size: int | None = None
    """Shorter side before cropping; default ``Recipe.load_scale * size``."""
    lr: float = 1e-4
    lr_decay: float = 5e-5
    """Inverse decay ``lr / (1 + lr_decay * step)`` (the original AdaIN/SANet/PAMA scripts)."""
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 500
    log_every: int = 1
    vgg: str | None = None
    """Loss-network weights (vgg_normalised.pth or a safetensors copy) for recipes that use ``ctx.vgg()``."""
    random_init_vgg: bool = False
    """A random loss network (pipeline tests only)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Factory options of the stylizer (stored in the export)."""
    recipe: Any = None
    """The recipe's own options (YAML mapping in, the recipe's options dataclass after validation)."""

    def validate(self, recipe: Recipe) -> "StylizerTrainConfig":
        name = self.stylizer
        for key in ("steps", "batch_size", "size", "checkpoint_every", "log_every"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} training: {key} must be a positive integer, got {value!r}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"{name} training: seed must be in [0, 2**63), got {self.seed!r}")
        if self.size % 16:
            raise ConfigError(f"{name} training: size must be a multiple of 16, got {self.size}")
        self.load_size = int(self.load_size or recipe.load_scale * self.size)
        if self.load_size < self.size:
            raise ConfigError(f"{name} training: load_size ({self.load_size}) must be >= size ({self.size})")
        if not self.lr > 0:
            raise ConfigError(f"{name} training: lr must be a finite number > 0, got {self.lr!r}")
        if not self.lr_decay >= 0:
            raise ConfigError(f"{name} training: lr_decay must be >= 0, got {self.lr_decay!r}")
        for key in ("content", "style"):
            if not getattr(self, key):
                raise ConfigError(f"{name} training: no {key} folder given", hint=f"pass --{key} DIR")
        if not self.out:
            raise ConfigError(f"{name} training: no run folder given", hint="pass --out DIR")
        raw = self.recipe if self.recipe is not None else {}
        if recipe.options is None:
            if raw:
                raise ConfigError(f"{name} training: the recipe takes no options, got recipe.{next(iter(raw))}")
            self.recipe = None
        elif not dataclasses.is_dataclass(raw):
            self.recipe = from_dict(recipe.options, raw, "recipe.")
        if recipe.check is not None:
            recipe.check(self)
        return self


# Settings a resumed run may change; every other one must equal the run's.
MAY_CHANGE_ON_RESUME = ("out", "steps", "checkpoint_every", "log_every", "device", "content", "style", "vgg",
                        "random_init_vgg")


def trainable_spec(name_or_spec: str | StylizerSpec, registry: Any = None) -> tuple[StylizerSpec, Recipe]:
    """The spec and its recipe; a clear error when the stylizer has no recipe."""
    if isinstance(name_or_spec, StylizerSpec):
        spec = name_or_spec
    else:
        from .registry import get_registry

        spec = (registry or get_registry()).stylizer(name_or_spec)
    if spec.recipe is None:
        raise ConfigError(f"stylizer {spec.name!r} cannot be trained in nstzoo: its plugin declares no recipe",
                          hint="`nstzoo stylizers list` shows which can (trainable)")
    return spec, spec.recipe


def build_stylizer_config(name_or_spec: str | StylizerSpec, files: list[str | Path] = (),
                          overrides: list[str] = (), flags: Mapping[str, Any] | None = None, *,
                          registry: Any = None) -> StylizerTrainConfig:
    """``recipe.defaults`` < YAML files < ``--set`` overrides < CLI flags -> validated config for one stylizer."""
    spec, recipe = trainable_spec(name_or_spec, registry)
    data = build_config_data(list(files), list(overrides), dict(flags or {}), base=dict(recipe.defaults))
    named = data.setdefault("stylizer", spec.name)
    if named != spec.name:
        raise ConfigError(f"the config names stylizer {named!r} but {spec.name!r} is being trained")
    return from_dict(StylizerTrainConfig, data).validate(recipe)


class _StepSampler:
    """Batches ``[B,3,size,size]`` in [0, 1] of random crops from folders, drawn per (seed, step).

    Shorter side resized to ``load_size`` then a random crop, as in the original training scripts.
    A batch holds distinct images when the folders have enough (a contrastive "negative" must not be
    its anchor); unreadable files are skipped and redrawn (:func:`nstzoo.data.steps.load_random_crops`).
    """

    def __init__(self, folders: list[str], stream: int, cfg: StylizerTrainConfig):
        self.paths = [p for folder in folders for p in list_images(folder)]
        self.stream, self.seed = stream, cfg.seed
        self.batch_size, self.size, self.load_size = cfg.batch_size, cfg.size, cfg.load_size
        self.warned: set[str] = set()

    def batch(self, step: int) -> Tensor:
        generator = step_generator(self.seed, step, self.stream)
        picks = distinct_draw(len(self.paths), self.batch_size, generator)
        images, _ = load_random_crops(self.paths, picks, self.size, generator, [], load_size=self.load_size,
                                      warned=self.warned)
        return images


def _modules(parts: TrainParts) -> dict[str, torch.nn.Module]:
    return {"model": parts.model, **parts.modules}


def train_stylizer(name_or_spec: str | StylizerSpec, config: StylizerTrainConfig | Mapping[str, Any], *,
                   resume: bool = False, registry: Any = None, log: Callable[[str], None] = lambda m: None,
                   on_step: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train a stylizer with its plugin's recipe and export its weights; returns the safetensors path.

    ``config`` is a :class:`StylizerTrainConfig` or a mapping of its keys (``recipe: {...}`` for the
    recipe's options), validated like a YAML file. ``resume`` continues the run folder's checkpoint.
    """
    spec, recipe = trainable_spec(name_or_spec, registry)
    if not isinstance(config, StylizerTrainConfig):
        flat = {k: (str(v) if isinstance(v, Path) else v) for k, v in dict(config).items()}
        for key in ("content", "style"):
            if isinstance(flat.get(key), (str, Path)):
                flat[key] = [str(flat[key])]
        data = build_config_data(base={**dict(recipe.defaults), **flat, "stylizer": spec.name})
        config = from_dict(StylizerTrainConfig, data).validate(recipe)
    cfg = config
    device = resolve_device(cfg.device)
    run = RunFolder(Path(cfg.out), f"stylizer:{spec.name}", MAY_CHANGE_ON_RESUME)
    with run.open(to_dict(cfg), resume=resume, seed=cfg.seed, device=str(device)):
        torch.manual_seed(cfg.seed)
        options = {**dict(spec.default_options), **cfg.options}
        with plugin_code(None, spec.name, "factory"):
            try:
                model = spec.factory(**options)
            except TypeError as exc:  # an option the factory does not take: the user's to fix
                raise ConfigError(f"{spec.name} training: bad options {cfg.options!r} ({exc})") from exc
        ctx = RecipeContext(cfg, device)
        with plugin_code(None, spec.name, "recipe.build"):
            parts = recipe.build(model.to(device), ctx)
        if not isinstance(parts, TrainParts) or "total" not in parts.optimizers:
            raise PluginError(f"stylizer {spec.name!r}: its recipe's build must return TrainParts with a "
                              "'total' optimiser")
        contents, styles = _StepSampler(cfg.content, 0, cfg), _StepSampler(cfg.style, 1, cfg)

        step = 0
        if resume:
            state = run.read_checkpoint()
            for name, module in _modules(parts).items():
                module.load_state_dict(state["modules"][name])
            for name, optimizer in parts.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
            run.restore_rng(state)
            step = int(state["step"])
            log(f"resuming {run.path} at step {step}")

        parts.model.train()
        with run.open_metrics() as metrics:
            while step < cfg.steps:
                lr = cfg.lr / (1.0 + cfg.lr_decay * step)
                for optimizer in parts.optimizers.values():
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                content, style = contents.batch(step).to(device), styles.batch(step).to(device)
                with plugin_code(None, spec.name, "recipe.losses"):
                    losses = recipe.losses(parts, cfg, content, style, step)
                missing = [name for name in parts.optimizers if name not in losses]
                if missing:
                    raise PluginError(f"stylizer {spec.name!r}: its recipe's losses returned no {missing[0]!r} "
                                      "term for the optimiser of that name")
                record = {"step": step + 1, "lr": lr, **{k: float(v.detach()) for k, v in losses.items()}}
                bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
                if bad:
                    raise TrainingDiverged(f"{spec.name} training diverged at step {step + 1}: "
                                           f"{bad[0]} = {record[bad[0]]}; stopped before the optimizer step",
                                           hint=run.divergence_hint())
                for name, optimizer in parts.optimizers.items():
                    optimizer.zero_grad(set_to_none=True)
                    losses[name].backward()
                    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
                    if not all_finite(grads):
                        raise TrainingDiverged(f"{spec.name} training: a gradient of {name!r} became non-finite "
                                               f"at step {step + 1}", hint=run.divergence_hint())
                    optimizer.step()
                step += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    run.log(metrics, record)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    run.save_checkpoint(step, {
                        "modules": {name: module.state_dict() for name, module in _modules(parts).items()},
                        "optimizers": {name: optimizer.state_dict() for name, optimizer in parts.optimizers.items()},
                    })
                if on_step is not None:
                    on_step(record)

        parts.model.eval()
        return save_safetensors(run.path / f"{spec.name}.safetensors", parts.model.state_dict(), kind="stylizer",
                                name=spec.name, config=options)


__all__ = ["StylizerTrainConfig", "build_stylizer_config", "train_stylizer", "trainable_spec", "MAY_CHANGE_ON_RESUME"]
