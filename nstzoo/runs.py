"""The run engine: one folder layout, one resume rule, one checkpoint format for every trainer.

Both ``nstzoo train`` (the ALADIN-NST learner) and ``nstzoo stylizers train`` (any stylizer's
recipe) write a run folder through :class:`RunFolder`::

    config.yaml          the resolved configuration (what --resume compares against)
    meta.json            what ran: kind, seed, package and plugin versions, start time, resumed from
    metrics.jsonl        one JSON record per logged step; ``step`` = optimizer steps completed (1-based)
    checkpoints/last.pt  state of the last completed step (atomic; read back with weights_only=True)
    <export>.safetensors the trained weights with their config (written at the end)
    .lock                held while a process writes here

Rules, the same for every trainer:

- **Start.** A folder that already holds run files is refused unless ``resume`` (exit 2, naming the
  file), so nothing is overwritten or appended to by accident. Two processes never write one run:
  the folder is locked (``flock``) for the life of the run.
- **Resume.** Needs ``checkpoints/last.pt``; settings must equal the run's except those the trainer
  declares free to change (``steps``, ``device``, ...); the difference is named. Records of steps
  past the checkpoint are dropped from the log (and a partial last line from a kill is removed), so
  the log reads as one uninterrupted run.
- **Checkpoints.** Written atomically (temp + rename); each holds the step, the modules' and
  optimisers' states, the CPU and CUDA RNG states and the resolved config. Non-finite parameters are
  never written: the last checkpoint kept is always a finite one.
- **Divergence.** A non-finite loss, gradient or parameter raises :class:`TrainingDiverged` before the
  optimizer step, with a hint naming the last good checkpoint (or saying none was written).
- **Orphans.** Temporary files left by a kill during a write are removed when a run starts.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from . import __version__
from .errors import ConfigError, NstzooError
from .files import atomic_write

CONFIG = "config.yaml"
META = "meta.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoints/last.pt"
LOCK = ".lock"
CHECKPOINT_FORMAT = 2


class TrainingDiverged(NstzooError):
    """A loss, gradient or parameter became NaN or infinite."""


class RunInterrupted(NstzooError):
    """SIGTERM (e.g. preemption) stopped the run after writing a checkpoint; ``--resume`` continues it.

    The command line exits with status 143 (128 + SIGTERM), as schedulers expect of a terminated job.
    """

    exit_code = 143


class RunLocked(NstzooError):
    """Another process is writing to this run folder."""


def package_versions() -> dict[str, str | None]:
    """Versions of Python, nstzoo and the libraries a run's numbers depend on."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "nstzoo": __version__}
    for name in ("torch", "torchvision", "timm", "pluggy", "safetensors", "faiss-cpu", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def rng_state() -> dict[str, Any]:
    """CPU and (when present) every CUDA device's RNG state."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _dotted(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (mappings flattened; lists and scalars kept)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_dotted(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], may_change: Iterable[str]) -> list[str]:
    """Dotted keys whose values differ, except those under a ``may_change`` prefix."""
    free = tuple(may_change)
    then, now = _dotted(saved), _dotted(current)
    diffs = []
    for key in sorted(set(then) | set(now)):
        if any(key == f or key.startswith(f + ".") for f in free):
            continue
        if then.get(key) != now.get(key):
            diffs.append(f"{key}: run has {then.get(key)!r}, now {now.get(key)!r}")
    return diffs


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when every floating-point tensor holds only finite values (one host sync)."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None and t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


@dataclass
class RunFolder:
    """A training run's folder. Use :meth:`open` (as a context manager) to start or resume one."""

    path: Path
    kind: str
    may_change: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ layout
    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def run_files(self) -> list[Path]:
        """Files that show the folder holds a run (or anything else a new run would overwrite)."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.name not in (LOCK,) and not _is_orphan(p))

    # ------------------------------------------------------------------ start / resume
    def open(self, config: Mapping[str, Any], *, resume: bool, seed: int, device: str,
             extra_meta: Mapping[str, Any] | None = None) -> "RunFolder":
        """Lock the folder, clean orphans, check the start/resume rule, write config.yaml and meta.json.

        Returns self; :attr:`start_step` is 0 for a new run, the checkpoint's step on resume.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create run folder {self.path}: {exc.strerror or exc}",
                              hint="choose a writable --out") from exc
        created_lock = not (self.path / LOCK).exists()
        self._lock()
        try:
            self._remove_orphans()
            self.start_step = self._check_start(config, resume)
            self._trim_metrics(self.start_step)
            atomic_write(self.config_path,
                         lambda tmp: Path(tmp).write_text(yaml.safe_dump(dict(config), sort_keys=False)))
            meta = {"kind": self.kind, "seed": seed, "device": device, "versions": package_versions(),
                    "resumed_from": self.start_step or None, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    **dict(extra_meta or {})}
            atomic_write(self.path / META, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
        except BaseException:
            self.close()
            if created_lock:  # a refused start leaves the folder as it found it
                (self.path / LOCK).unlink(missing_ok=True)
            raise
        return self

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunLocked(f"{self.path} is in use by another nstzoo process",
                            hint="wait for it to finish, or choose another --out") from None
        self._lock_fd = fd

    def _remove_orphans(self) -> None:
        for folder in (self.path, self.path / "checkpoints"):
            if folder.is_dir():
                for entry in folder.iterdir():
                    if _is_orphan(entry):
                        entry.unlink(missing_ok=True)

    def _check_start(self, config: Mapping[str, Any], resume: bool) -> int:
        if not resume:
            existing = [p for p in self.run_files() if not self._is_unstarted_run_file(p)]
            if existing:
                raise ConfigError(f"{self.path} is not empty ({existing[0].name} is there)",
                                  hint="pass --resume to continue the run there, or choose another --out")
            return 0
        if not self.checkpoint_path.is_file():
            if self.config_path.is_file():
                raise ConfigError(f"cannot resume {self.path}: it stopped before its first checkpoint",
                                  hint="run the same command without --resume: no training step was saved")
            raise ConfigError(f"cannot resume: no checkpoint at {self.checkpoint_path}",
                              hint="start a new run without --resume, or point --out at the run folder")
        saved = self._read_saved_config()
        diffs = config_differences(saved, config, self.may_change)
        if diffs:
            raise ConfigError(f"cannot resume {self.path}: settings differ — " + "; ".join(diffs),
                              hint="resume with the run's own settings, or start a new run folder")
        return int(self.read_checkpoint()["step"])

    def _is_unstarted_run_file(self, path: Path) -> bool:
        """A file of a run that never saved a checkpoint: a fresh start may replace it (nothing is lost)."""
        if self.checkpoint_path.exists():
            return False
        if path.name == "checkpoints":
            return path.is_dir() and not any(path.iterdir())
        return path.name in (CONFIG, META, METRICS)

    def _read_saved_config(self) -> dict[str, Any]:
        try:
            saved = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"cannot resume {self.path}: {CONFIG} is missing",
                              hint="start a new run folder") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot resume {self.path}: {self.config_path} is unreadable ({exc})",
                              hint="start a new run folder") from exc
        if not isinstance(saved, dict):
            raise ConfigError(f"cannot resume {self.path}: {self.config_path} is not a mapping",
                              hint="start a new run folder")
        return saved

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, step: int, state: Mapping[str, Any]) -> Path:
        """Atomically write ``state`` (modules, optimisers, ...) with the step and RNG states.

        Refuses (:class:`TrainingDiverged`) a state holding a non-finite tensor, so the checkpoint on
        disk is always the last finite one.
        """
        tensors = [t for t in _tensors(state)]
        if not all_finite(tensors):
            raise TrainingDiverged(f"non-finite weights at step {step}; not writing a checkpoint",
                                   hint=self.divergence_hint())
        payload = {"format": CHECKPOINT_FORMAT, "kind": self.kind, "step": step, "rng": rng_state(), **state}
        return atomic_write(self.checkpoint_path, lambda tmp: torch.save(payload, tmp))

    def read_checkpoint(self) -> dict[str, Any]:
        """The last checkpoint (``weights_only=True``); a clear error when it is missing or damaged."""
        path = self.checkpoint_path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ConfigError(f"no checkpoint at {path}") from None
        except Exception as exc:  # truncated zip, wrong format, unpickling refused
            raise ConfigError(f"{path} is damaged or not a checkpoint ({type(exc).__name__}: {exc})",
                              hint=f"remove {self.path} and start again, or restore the file") from exc
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("kind") != self.kind:
            raise ConfigError(f"{path} is not a {self.kind} checkpoint of this nstzoo version",
                              hint="start a new run folder")
        return state

    def restore_rng(self, state: Mapping[str, Any]) -> None:
        set_rng_state(state["rng"])

    def divergence_hint(self) -> str:
        if self.checkpoint_path.is_file():
            return f"the last good checkpoint is {self.checkpoint_path}; lower the learning rate or check the data"
        return "no checkpoint was written yet; lower the learning rate or check the data"

    # ------------------------------------------------------------------ metrics
    def _trim_metrics(self, step: int) -> None:
        """Keep records of completed steps <= ``step``; drop a partial last line left by a kill."""
        path = self.metrics_path
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                kept.append(line)
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))

    def open_metrics(self):
        """The metrics log, opened for appending (one JSON record per line, flushed by :meth:`log`)."""
        return open(self.metrics_path, "a", encoding="utf-8")

    @staticmethod
    def log(handle: Any, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line; non-finite floats are written as null (JSON has no NaN)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        handle.write(json.dumps(clean) + "\n")
        handle.flush()

    def records(self) -> list[dict[str, Any]]:
        """Every complete record of the metrics log."""
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


def _is_orphan(path: Path) -> bool:
    # atomic_write names its temporaries ".<name>.<pid>.<hex>.tmp".
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def _tensors(state: Any) -> Iterable[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, Mapping):
        for value in state.values():
            yield from _tensors(value)
    elif isinstance(state, (list, tuple)):
        for value in state:
            yield from _tensors(value)


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.yaml`` of a run folder, as a mapping (for eval/export of unfinished runs)."""
    return RunFolder(Path(run_dir), kind="?")._read_saved_config()


__all__ = ["RunFolder", "TrainingDiverged", "RunInterrupted", "RunLocked", "CONFIG", "META", "METRICS", "CHECKPOINT",
           "config_differences", "all_finite", "rng_state", "set_rng_state", "package_versions", "load_run_config"]
