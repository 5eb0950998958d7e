"""What a stylizer's training recipe gets from the host, and helpers most recipes share.

A plugin's :class:`~nstzoo.specs.Recipe` is called with a :class:`RecipeContext`; this module is the
only part of the training machinery a plugin imports (never the loop in
:mod:`nstzoo.stylizer_training`). The helpers cover the common case of the VGG family (AdaIN, SANet,
PAMA, NeAT, ...): a frozen normalised VGG-19 as loss network, whose first slots are also the
stylizer's own frozen encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .specs import StateDict, TrainParts


@dataclass
class RecipeContext:
    """The run a recipe builds its parts for.

    Attributes:
        config: the validated run config (:class:`nstzoo.stylizer_training.StylizerTrainConfig`);
            ``config.recipe`` holds the recipe's own options (an instance of ``Recipe.options``).
        device: where the model lives and the losses run.
    """

    config: Any
    device: torch.device
    _vgg_state: StateDict | None = field(default=None, repr=False)
    _vgg: nn.Module | None = field(default=None, repr=False)

    def adam(self, params: Any, **kwargs: Any) -> torch.optim.Adam:
        """Adam at the run's learning rate (the loop sets the decayed rate every step)."""
        return torch.optim.Adam(params, lr=self.config.lr, **kwargs)

    def vgg_state(self) -> StateDict:
        """The normalised VGG-19 (relu1_1..relu5_1) state from the run's ``vgg`` file.

        With ``random_init_vgg`` the weights are random but He-scaled (PyTorch's default init shrinks
        features towards zero by relu5_1), so every loss term carries signal in pipeline tests.
        """
        if self._vgg_state is None:
            from .nn.checkpoints import read_official_state
            from .nn.vgg import random_official_vgg_state, select_vgg_keys

            cfg = self.config
            if cfg.vgg is not None:
                self._vgg_state = select_vgg_keys(read_official_state(Path(cfg.vgg)), upto="relu5_1", source=cfg.vgg)
            elif cfg.random_init_vgg:
                full = random_official_vgg_state(torch.Generator().manual_seed(cfg.seed))
                self._vgg_state = select_vgg_keys(full, upto="relu5_1", source="random VGG")
            else:
                raise ConfigError(f"{cfg.stylizer} training needs the normalised VGG-19 for its losses: "
                                  "set vgg to vgg_normalised.pth (--vgg or --set vgg=PATH)",
                                  hint="or --random-init-vgg for a pipeline test (the result will not stylise well)")
        return self._vgg_state

    def vgg(self) -> nn.Module:
        """The frozen normalised VGG-19 loss network (``.taps(images, layers)``), on the run's device."""
        if self._vgg is None:
            from .nn.vgg import NormalisedVGG19

            network = NormalisedVGG19("relu5_1")
            network.load_state_dict(self.vgg_state())
            self._vgg = network.to(self.device).eval().requires_grad_(False)
        return self._vgg


def load_frozen_vgg_encoder(encoder: nn.Sequential, ctx: RecipeContext) -> None:
    """Fill a stylizer's VGG encoder (the first ``len(encoder)`` slots of the normalised VGG-19) and freeze it."""
    state = ctx.vgg_state()
    encoder.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[0]) < len(encoder)})
    encoder.requires_grad_(False)


def vgg_generator_parts(model: nn.Module, ctx: RecipeContext) -> TrainParts:
    """The VGG family's usual parts: frozen ``model.encoder``, one Adam over the rest, VGG loss network."""
    load_frozen_vgg_encoder(model.encoder, ctx)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return TrainParts(model, {"total": ctx.adam(trainable)}, loss_network=ctx.vgg())


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, stream): a resumed run replays the same draws.

    Streams used by the loop: 0 content crops, 1 style crops; recipes use 2 and up (NeAT: 2, blur).
    """
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 8 + stream)


__all__ = ["RecipeContext", "load_frozen_vgg_encoder", "vgg_generator_parts", "step_generator"]
