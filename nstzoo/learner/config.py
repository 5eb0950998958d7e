"""The ALADIN-NST learner's configuration: the ``nstzoo train`` YAML schema, its defaults and checks.

Built by :func:`build_train_config` through the one config system (:mod:`nstzoo.config`). Where the
paper is silent the choice is made here, documented on the field, and configurable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import build_config_data, from_dict
from ..errors import ConfigError


@dataclass
class DataConfig:
    content: list[str] = field(default_factory=list)
    """Content images: folders (searched recursively), shard sets (folder with shards.json) or tar globs."""
    style: list[str] = field(default_factory=list)
    """Style images: folders, shard sets or tar globs, as for content."""
    real_photos: bool = False
    """Add the real photos shipped inside installed wheels (scikit-image, scikit-learn) to the contents."""
    workers: int = 2
    """DataLoader worker processes for decoding and resizing (0 = in the main process)."""


@dataclass
class SynthConfig:
    stylizers: list[str] = field(default_factory=lambda: ["reinhard", "patch-wct"])
    """Stylizers drawn per sample (paper: neat, pama, sanet)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Relative draw probability per stylizer; missing names get 1 (uniform by default)."""
    size: int = 512
    """Stylization size in pixels (paper: 512); images are resized and cropped to size x size."""
    random_init: bool = False
    """Allow stylizers without weights to run with random ones (pipeline tests only)."""
    autocast: bool = True
    """bf16 autocast for the stylizers on CUDA (CPU stylizers always run in fp32)."""


@dataclass
class EncoderConfig:
    name: str = "aladin-nst"
    """Registered encoder (``nstzoo encoders list``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the encoder's factory, stored in exports so the model can be rebuilt."""


@dataclass
class LossConfig:
    temperature: float = 0.1
    """InfoNCE/SupCon temperature tau (open in the paper; 0.1 as pytorch-metric-learning's SupConLoss)."""
    gt_weight: float = 1.0
    """Weight of the terms whose positive or anchor is a source style image (the paper's ground-truth terms)."""


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """Adam learning rate (open in the paper; ALADIN used 1e-4)."""
    lr_decay: float = 0.999875
    """Multiplicative decay applied every ``decay_every`` steps (paper: x0.999875 every 100 iterations)."""
    decay_every: int = 100
    weight_decay: float = 0.0


@dataclass
class TrainConfig:
    out: str = "runs/aladin-nst"
    """Run folder: config.yaml, meta.json, metrics.jsonl, checkpoints/, encoder.safetensors."""
    steps: int = 1000
    batch_size: int = 1024
    """Stylized images per optimizer step (the target batch; paper: 1024). Half as many style images
    are drawn and each stylizes two contents; the style images join the batch as positives."""
    chunk_size: int = 32
    """Images per forward pass under logit accumulation (memory knob; does not change the gradients)."""
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    """bf16 autocast for the encoder (CPU with AVX-512 bf16, or CUDA); fp32 master weights."""
    checkpoint_every: int = 100
    log_every: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def validate(self) -> "TrainConfig":
        checks = [
            (self.steps >= 1, "steps", self.steps, "must be >= 1"),
            (self.batch_size >= 2 and self.batch_size % 2 == 0, "batch_size", self.batch_size,
             "must be an even number >= 2 (each style image stylizes two contents)"),
            (self.chunk_size >= 1, "chunk_size", self.chunk_size, "must be >= 1"),
            (self.synth.size >= 16, "synth.size", self.synth.size, "must be >= 16"),
            (bool(self.synth.stylizers), "synth.stylizers", self.synth.stylizers, "must name at least one stylizer"),
            (all(w >= 0 for w in self.synth.weights.values()), "synth.weights", self.synth.weights, "must be >= 0"),
            (self.loss.temperature > 0, "loss.temperature", self.loss.temperature, "must be > 0"),
            (self.loss.gt_weight >= 0, "loss.gt_weight", self.loss.gt_weight, "must be >= 0"),
            (self.optim.lr > 0, "optim.lr", self.optim.lr, "must be > 0"),
            (0 < self.optim.lr_decay <= 1, "optim.lr_decay", self.optim.lr_decay, "must be in (0, 1]"),
            (self.optim.decay_every >= 1, "optim.decay_every", self.optim.decay_every, "must be >= 1"),
            (self.data.workers >= 0, "data.workers", self.data.workers, "must be >= 0"),
            (self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, "must be >= 1"),
            (self.log_every >= 1, "log_every", self.log_every, "must be >= 1"),
            (0 <= self.seed < 2**63, "seed", self.seed, "must be in [0, 2**63)"),
            (not self.synth.weights or sum(self.synth.weights.get(n, 1.0) for n in self.synth.stylizers) > 0,
             "synth.weights", self.synth.weights, "must give some stylizer a weight > 0"),
        ]
        for ok, key, value, why in checks:
            if not ok:
                raise ConfigError(f"invalid {key}={value!r}: {why}")
        unknown = set(self.synth.weights) - set(self.synth.stylizers)
        if unknown:
            raise ConfigError(f"synth.weights names stylizers not in synth.stylizers: {sorted(unknown)}")
        return self






# Settings a resumed run may change; every other one must equal the run's (it shapes the model, the
# data or the optimisation). The same rule as `nstzoo stylizers train` (solo-learn's: refuse drift).
MAY_CHANGE_ON_RESUME = ("out", "steps", "checkpoint_every", "log_every", "device", "data.workers")


def build_train_config(files: list[str | Path] = (), overrides: list[str] = (),
                       flags: dict[str, Any] | None = None) -> TrainConfig:
    """YAML files (later wins) + ``--set`` overrides + explicit CLI flags (dotted keys) -> validated config."""
    return from_dict(TrainConfig, build_config_data(files, overrides, flags)).validate()
