"""One config system for every trainer: YAML files + ``--set`` overrides -> typed, validated dataclasses.

A config is a YAML mapping whose sections mirror a dataclass's fields (the learner's
:class:`nstzoo.learner.config.TrainConfig`, the stylizer trainer's
:class:`nstzoo.stylizer_training.StylizerTrainConfig`, a recipe's options). Unknown keys and wrong
types are a :class:`~nstzoo.errors.ConfigError` that names the key path (``optim.lr``) and the closest
valid key. ``--set key.path=value`` overrides parse ``value`` as YAML (``--set optim.lr=3e-4``,
``--set synth.stylizers=[reinhard,patch-wct]``). Numbers must be finite: ``inf``/``nan``/``1e400`` are
refused wherever a float is expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

if typing.TYPE_CHECKING:  # pragma: no cover
    import torch


def _finite(value: float, key: str) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
    return value


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return _finite(float(value), key)
    if annotation in (int, float) and isinstance(value, str):
        # PyYAML (YAML 1.1) reads "3e-4" as a string; accept what Python would parse.
        try:
            parsed = annotation(value)
        except ValueError:
            raise ConfigError(f"config key {key!r} must be {annotation.__name__}, got {value!r}") from None
        return _finite(parsed, key) if annotation is float else parsed
    if annotation is float and isinstance(value, float):
        return _finite(value, key)
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
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
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


def build_config_data(files: list[str | Path] = (), overrides: list[str] = (),
                      flags: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` < YAML files (later wins) < ``--set`` overrides < explicit CLI flags (dotted keys), as one mapping."""
    data: dict[str, Any] = dict(base or {})
    for f in files:
        data = merge(data, load_yaml(f))
    for assignment in overrides:
        apply_override(data, assignment)
    for key, value in (flags or {}).items():
        if value is not None:
            apply_override(data, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
                           if not isinstance(value, str) else f"{key}={value}")
    return data


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
