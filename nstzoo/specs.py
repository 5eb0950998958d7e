"""What a plugin registers: :class:`StylizerSpec` and :class:`EncoderSpec`.

A spec keeps an architecture's *description* (name, factory, paper, the files it needs) apart from
*where its weights live*: weights are always resolved by :mod:`nstzoo.weights`, so a local file can
be substituted for any model.
"""

from __future__ import annotations

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
        train: optional ``train(config: dict) -> None`` entry used by ``nstzoo stylizers train``.
        weights_source: where the official files come from (URL or description), for messages.
        locate_official: optional ``() -> list[Path] | None`` finding the official files on this machine
            (e.g. inside an installed package), so ``nstzoo weights import NAME`` needs no paths.
    """

    name: str
    factory: Callable[..., nn.Module]
    summary: str
    paper: str = ""
    weight_files: tuple[str, ...] = ()
    import_official: ImportOfficial | None = None
    needs_weights: bool = True
    default_options: Mapping[str, Any] = field(default_factory=dict)
    train: Callable[..., Any] | None = None
    weights_source: str = ""
    locate_official: Callable[[], Sequence[Path] | None] | None = None

    def __post_init__(self) -> None:
        validate_name(self.name, "stylizer")
        if not callable(self.factory):
            raise PluginError(f"stylizer {self.name!r}: factory must be callable, got {self.factory!r}")
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
        factory: ``factory(**config) -> nn.Module``; the config is stored in exported weights so the
            same call rebuilds the module.
        summary: one line for ``nstzoo encoders list``.
        paper: citation or URL.
        default_config: the factory's defaults, shown by ``nstzoo encoders list --json``.
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
