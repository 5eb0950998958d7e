"""YAML -> typed, validated configuration for the ALADIN-NST learner.

A config is a YAML mapping whose sections mirror :class:`TrainConfig`'s fields. Unknown keys and
wrong types are a :class:`~nstzoo.errors.ConfigError` that names the key path (``optim.lr``) and the
closest valid key. ``--set key.path=value`` overrides parse ``value`` as YAML (``--set optim.lr=3e-4``,
``--set synth.stylizers=[reinhard,patch-wct]``).

Where the paper is silent the choice is made here, documented on the field, and configurable.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

if typing.TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class DataConfig:
    content: list[str] = field(default_factory=list)
    """Folders of content images (searched recursively)."""
    style: list[str] = field(default_factory=list)
    """Folders of style images."""
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
        ]
        for ok, key, value, why in checks:
            if not ok:
                raise ConfigError(f"invalid {key}={value!r}: {why}")
        unknown = set(self.synth.weights) - set(self.synth.stylizers)
        if unknown:
            raise ConfigError(f"synth.weights names stylizers not in synth.stylizers: {sorted(unknown)}")
        return self


# Keys that must match for --resume to continue a run (solo-learn's rule: refuse silent drift).
RESUME_KEYS = ("batch_size", "chunk_size", "seed", "synth.stylizers", "synth.weights", "synth.size",
               "encoder.name", "encoder.options", "loss.temperature", "loss.gt_weight", "optim.lr",
               "optim.lr_decay", "optim.decay_every", "data.content", "data.style", "data.real_photos")


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, str):
        # PyYAML (YAML 1.1) reads "3e-4" as a string; accept what Python would parse.
        try:
            return annotation(value)
        except ValueError:
            raise ConfigError(f"config key {key!r} must be {annotation.__name__}, got {value!r}") from None
    if origin is list:
        if isinstance(value, str):  # "a,b,c" from the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        (item_type,) = typing.get_args(annotation) or (Any,)
        return [_check_type(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        _, value_type = typing.get_args(annotation) or (Any, Any)
        return {str(k): _check_type(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _check_type(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key!r} has invalid value {value!r}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key {key!r} must be null, got {value!r}")
    if isinstance(annotation, type) and (not isinstance(value, annotation) or
                                         (annotation in (int, float) and isinstance(value, bool))):
        raise ConfigError(f"config key {key!r} must be {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested mapping, naming any unknown key with the closest match."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            raise ConfigError(f"unknown config key {path!r}" + (f"; did you mean '{prefix}{close[0]}'?" if close else ""),
                              hint=f"valid keys here: {', '.join(fields)}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = from_dict(annotation, value or {}, f"{path}.")
        else:
            kwargs[key] = _check_type(value, annotation, path)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``key.path=value`` (value parsed as YAML) to a nested mapping in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. optim.lr=3e-4")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML ({exc})") from exc
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is not a section")
    node[parts[-1]] = value


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_train_config(files: list[str | Path] = (), overrides: list[str] = (),
                       flags: dict[str, Any] | None = None) -> TrainConfig:
    """YAML files (later wins) + ``--set`` overrides + explicit CLI flags (dotted keys) -> validated config."""
    data: dict[str, Any] = {}
    for f in files:
        data = merge(data, load_yaml(f))
    for assignment in overrides:
        apply_override(data, assignment)
    for key, value in (flags or {}).items():
        if value is not None:
            apply_override(data, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
                           if not isinstance(value, str) else f"{key}={value}")
    return from_dict(TrainConfig, data).validate()


def get_path(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def resolve_device(name: str | None) -> "torch.device":
    """``auto`` (or None/empty) -> CUDA when available, else CPU; any other name is validated."""
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {name!r}: {exc}", hint="use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available", hint="use --device cpu")
    return device
