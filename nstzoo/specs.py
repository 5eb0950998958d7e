"""What a plugin registers: :class:`StylizerSpec` (with its training :class:`Recipe`), :class:`EncoderSpec`,
and the contract every style encoder keeps, :class:`StyleEncoder`.

A spec keeps an architecture's *description* (name, factory, paper, the files it needs) apart from
*where its weights live*: weights are always resolved by :mod:`nstzoo.weights`, so a local file can
be substituted for any model.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import PluginError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")

StateDict = dict[str, torch.Tensor]
ImportOfficial = Callable[[Sequence[Path]], StateDict]

#: Controls a stylizer may declare in :attr:`StylizerSpec.controls` (``nstzoo stylize`` refuses the
#: others for it): ``alpha`` = content-style strength, ``style_mix`` = interpolation between styles.
#: Colour preservation needs no declaration: it is applied to any stylizer's output.
CONTROLS: frozenset[str] = frozenset({"alpha", "style_mix"})


# ----------------------------------------------------------------------------- training recipes
@dataclass
class TrainParts:
    """What a stylizer's training run holds, as its recipe builds it.

    Attributes:
        model: the stylizer being trained (the spec's factory output, on the run's device).
        optimizers: loss-term name -> the optimiser that minimises it. Each step the loop steps
            them in this order on the terms ``Recipe.losses`` returned (``"total"`` first; e.g.
            NeAT adds ``"discriminator"``). Each term needs its own autograd graph (share only
            detached tensors), because one term's backward frees its graph.
        modules: further modules the losses use (projection heads, a discriminator, a colour
            histogram); they are saved in checkpoints with the model.
        loss_network: a frozen network the losses consult (e.g. the normalised VGG-19), or None.
    """

    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    modules: dict[str, nn.Module] = field(default_factory=dict)
    loss_network: nn.Module | None = None


@dataclass(frozen=True)
class Recipe:
    """How a stylizer trains: its objective, declared by its plugin next to its architecture.

    The generic loop (:mod:`nstzoo.stylizer_training`, ``nstzoo stylizers train NAME``) owns data,
    learning-rate schedule, checkpoints, resume and export; the recipe brings the rest. It never
    imports a plugin, so a third-party stylizer trains exactly like a built-in one.

    Attributes:
        build: ``build(model, ctx) -> TrainParts``. ``model`` arrives seeded and on the device;
            ``ctx`` is a :class:`nstzoo.stylizer_training.RecipeContext`: ``ctx.config`` (the
            validated run config, with ``ctx.config.recipe`` this recipe's options), ``ctx.device``,
            ``ctx.adam(params, **kw)``, ``ctx.vgg()`` (the frozen normalised VGG-19 loss network,
            loaded from the run's ``vgg`` file) and ``ctx.vgg_state()``.
        losses: ``losses(parts, config, content, style, step) -> {name: scalar tensor}`` for crops
            ``[B,3,size,size]`` in [0, 1]; must hold a key per optimiser (at least ``"total"``);
            every term is logged. ``config.recipe`` holds the options below.
        options: a dataclass of the recipe's own settings (loss weights, switches) with defaults;
            ``--set recipe.KEY=VALUE`` and the YAML ``recipe:`` section are validated against it
            (unknown key -> error naming the closest one). None when the recipe has none.
        defaults: the recipe's defaults for generic settings (``steps``, ``batch_size``, ``size``,
            ``lr``, ``lr_decay``, ``checkpoint_every``, ...).
        load_scale: when ``load_size`` is unset, the shorter side before cropping is ``load_scale * size``.
        check: optional validation of the resolved config; raises :class:`~nstzoo.errors.ConfigError`.
    """

    build: Callable[..., TrainParts]
    losses: Callable[..., dict[str, torch.Tensor]]
    options: type | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    load_scale: int = 1
    check: Callable[[Any], None] | None = None

    def __post_init__(self) -> None:
        if not callable(self.build) or not callable(self.losses):
            raise PluginError("a Recipe needs callable build and losses")
        if self.options is not None and not dataclasses.is_dataclass(self.options):
            raise PluginError(f"Recipe.options must be a dataclass type, got {self.options!r}")


# ----------------------------------------------------------------------------- the encoder contract
class StyleEncoder(nn.Module):
    """Base class of every style encoder: images in, unit-norm style embeddings out.

    Contract (checked by :func:`nstzoo.testing.check_encoder`, relied on by the trainer, logit
    accumulation, evaluation and export):

    - ``forward(images, frozen=None)``: ``images`` float ``[B,3,H,W]`` in [0, 1], any size ->
      float32 ``[B, embed_dim]`` with unit L2 norm. One item's output must not depend on the other
      items of the batch (no BatchNorm in training mode), so logit accumulation stays exact.
    - ``embed_dim``: the embedding width.
    - ``input_sizes``: the square sides the branches resize images to (evaluation squashes test
      images once, to the largest); empty when the encoder takes any size as is.
    - ``export_config()``: JSON-serialisable factory keyword arguments that rebuild the architecture
      with no weight files (an export carries every tensor); default: ``self.config``.
    - ``frozen_features(images)``: features of frozen branches, computed once per step and passed
      back as ``frozen`` to both accumulation passes; default None (nothing frozen to reuse).
    - ``training_forward(images, frozen=None)``: ``(embeddings, auxiliary_loss or None)`` for the
      gradient pass; an encoder with an extra objective (ALADIN's reconstruction) returns it as a
      scalar, the mean over the chunk's items, already weighted; default ``(forward(...), None)``.
    """

    embed_dim: int = 0
    input_sizes: tuple[int, ...] = ()
    config: dict[str, Any]

    def export_config(self) -> dict[str, Any]:
        config = getattr(self, "config", None)
        if not isinstance(config, dict):
            raise NotImplementedError(f"{type(self).__name__} must set self.config or override export_config()")
        return dict(config)

    def frozen_features(self, images: torch.Tensor) -> Any | None:
        return None

    def training_forward(self, images: torch.Tensor, frozen: Any | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self(images, frozen), None

    @property
    def trainable(self) -> bool:
        """True when some parameter requires a gradient (training-free floors return False)."""
        return any(p.requires_grad for p in self.parameters())


def factory_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of a factory's signature (tuples as lists, as YAML and JSON give them back).

    An encoder's defaults are written once, in its constructor; ``EncoderSpec.default_config`` and
    ``nstzoo encoders list --json`` read them from there.
    """
    import inspect

    defaults = {}
    for name, parameter in inspect.signature(factory).parameters.items():
        if parameter.default is not inspect.Parameter.empty and parameter.kind is not parameter.VAR_KEYWORD:
            value = parameter.default
            defaults[name] = list(value) if isinstance(value, tuple) else value
    return defaults


def validate_name(name: str, kind: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PluginError(
            f"invalid {kind} name {name!r}: use lower-case letters, digits, '-' or '_', starting with a letter"
        )
    return name


@dataclass(frozen=True)
class StylizerSpec:
    """A feed-forward style transfer method.

    Attributes:
        name: CLI id, lower-case (``nstzoo stylize --stylizer NAME``).
        factory: ``factory(**options) -> nn.Module``; builds the architecture with *no* weights loaded.
            The module's ``forward(content, style)`` takes float tensors in [0, 1] of shapes
            ``[B,3,H,W]`` and ``[B,3,H',W']`` and returns ``[B,3,H,W]`` in [0, 1].
        summary: one line for ``nstzoo stylizers list``.
        paper: citation (authors, title, venue, year) or URL.
        weight_files: the official files ``import_official`` takes, in order (names only, for messages).
        import_official: ``import_official(paths) -> state_dict`` in this project's key layout; read
            ``.pth`` files with :func:`nstzoo.weights.read_checkpoint` (``weights_only=True``).
        needs_weights: False for methods with no learned parameters.
        default_options: keyword arguments the factory gets unless overridden.
        recipe: the training objective (:class:`Recipe`) that ``nstzoo stylizers train NAME`` runs;
            None when the method is not trainable here.
        weights_source: where the official files come from (URL or description), for messages.
        locate_official: optional ``() -> list[Path] | None`` finding the official files on this machine
            (e.g. inside an installed package), so ``nstzoo weights import NAME`` needs no paths.
        controls: the controls of :data:`CONTROLS` the module honours (default: none). A stylizer that
            declares any implements ``module.stylize_controlled(content, styles, *, alpha=1.0,
            style_weights=None, whole=None)``: ``content`` ``[B,3,H,W]`` and ``styles`` K tensors
            ``[B or 1,3,H',W']`` in [0, 1], ``style_weights`` K non-negative floats summing to 1 (None: one
            style), ``whole`` an optional downsampled view ``[B,3,h,w]`` of the whole content when
            ``content`` is a tile of it. Returns ``[B,3,H,W]`` in [0, 1], equal to ``forward`` for
            ``alpha=1`` and one style within ``forward``'s working size; it runs at the content's own
            size (callers tile large images). ``alpha=0`` gives the content, or the method's
            reconstruction of it.
    """

    name: str
    factory: Callable[..., nn.Module]
    summary: str
    paper: str = ""
    weight_files: tuple[str, ...] = ()
    import_official: ImportOfficial | None = None
    needs_weights: bool = True
    default_options: Mapping[str, Any] = field(default_factory=dict)
    recipe: Recipe | None = None
    weights_source: str = ""
    locate_official: Callable[[], Sequence[Path] | None] | None = None
    controls: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        validate_name(self.name, "stylizer")
        if isinstance(self.controls, str) or not all(isinstance(c, str) for c in self.controls):
            raise PluginError(f"stylizer {self.name!r}: controls must be a set of names from "
                              f"{', '.join(sorted(CONTROLS))}, got {self.controls!r}")
        unknown = sorted(set(self.controls) - CONTROLS)
        if unknown:
            raise PluginError(f"stylizer {self.name!r}: unknown control(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(CONTROLS))}")
        object.__setattr__(self, "controls", frozenset(self.controls))
        if not callable(self.factory):
            raise PluginError(f"stylizer {self.name!r}: factory must be callable, got {self.factory!r}")
        if self.recipe is not None and not isinstance(self.recipe, Recipe):
            raise PluginError(f"stylizer {self.name!r}: recipe must be a nstzoo.specs.Recipe, got {self.recipe!r}")
        if self.needs_weights and self.import_official is None and not self.weight_files:
            # Allowed (weights may come only from `nstzoo stylizers train`), but the spec must say
            # so through weights_source so the missing-weights message can tell the user what to do.
            if not self.weights_source:
                raise PluginError(
                    f"stylizer {self.name!r} needs weights but declares neither weight_files/import_official "
                    "nor weights_source"
                )


@dataclass(frozen=True)
class EncoderSpec:
    """A style encoder: images in [0, 1] ``[B,3,H,W]`` -> L2-normalised embeddings ``[B, embed_dim]``.

    Attributes:
        name: CLI id (``nstzoo train --encoder NAME``).
        factory: ``factory(**config) -> StyleEncoder``; ``export_config()`` of the result is stored in
            exported weights so the same call rebuilds the module.
        summary: one line for ``nstzoo encoders list``.
        paper: citation or URL.
        default_config: the factory's defaults, shown by ``nstzoo encoders list --json``; read from the
            factory's signature when not given (:func:`factory_defaults`).
    """

    name: str
    factory: Callable[..., nn.Module]
    summary: str
    paper: str = ""
    default_config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_name(self.name, "encoder")
        if not callable(self.factory):
            raise PluginError(f"encoder {self.name!r}: factory must be callable, got {self.factory!r}")
        if not self.default_config:
            object.__setattr__(self, "default_config", factory_defaults(self.factory))
