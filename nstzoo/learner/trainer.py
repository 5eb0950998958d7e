"""The ALADIN-NST trainer: synthesize, embed, SupCon over style ids with logit accumulation, Adam.

A run folder holds::

    config.yaml          the resolved configuration (what --resume compares against)
    meta.json            seed, package versions, plugin versions, start time
    metrics.jsonl        one JSON record per step: loss, lr, throughput, methods drawn, skipped files
    checkpoints/last.pt  model, optimizer, scheduler, scaler, RNG states, step (atomic: temp + rename)
    encoder.safetensors  the encoder with its config in the header (written at the end)

A NaN or infinite loss stops the run before the optimizer step, so ``checkpoints/last.pt`` still
holds the last good state.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import __version__
from ..config import RESUME_KEYS, TrainConfig, get_path, resolve_device, to_dict
from ..errors import ConfigError, DataError, NstzooError
from ..registry import get_registry
from .synth import BatchSynthesizer, encoder_batch, method_histogram
from ..files import atomic_write, drop_jsonl_records
from ..weights import load_stylizer, save_safetensors
from .accumulate import accumulated_step, split_into_chunks
from .loss import SupConLoss

CHECKPOINT = "checkpoints/last.pt"
ENCODER_EXPORT = "encoder.safetensors"


class TrainingDiverged(NstzooError):
    """The loss became NaN or infinite."""


@dataclass
class StepRecord:
    step: int
    loss: float
    lr: float
    seconds: float
    images_per_s: float
    methods: dict[str, int]
    skipped: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "nstzoo": __version__}
    for name in ("torch", "torchvision", "timm", "pluggy", "safetensors", "faiss-cpu", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX); emulated bf16 is far slower than fp32."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def collect_images(folders: list[str], what: str, extra: list[Path] = ()) -> list[Path]:
    from ..data.folder import list_images

    paths: list[Path] = []
    for folder in folders:
        paths.extend(list_images(folder))
    paths.extend(extra)
    if not paths:
        raise DataError(f"no {what} images: give --{what} DIR (or data.{what} in the config)")
    return paths


def build_encoder(config: TrainConfig) -> torch.nn.Module:
    spec = get_registry().encoder(config.encoder.name)
    return spec.factory(**config.encoder.options)


def export_encoder(model: torch.nn.Module, config: TrainConfig, path: Path, step: int) -> Path:
    """Write the encoder with ``{"encoder": name, "options": ...}`` in the header (load with load_encoder).

    A module's ``export_config()``, when it has one, gives the options that rebuild its architecture
    without the weight files it was first built from (the state dict carries every weight).
    """
    options = model.export_config() if hasattr(model, "export_config") else dict(config.encoder.options)
    return save_safetensors(path, model.state_dict(), kind="encoder", name=config.encoder.name,
                            config={"encoder": config.encoder.name, "options": options, "step": step})


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resume(run_dir: Path, config: TrainConfig) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"cannot resume: {saved_path} not found")
    saved = yaml.safe_load(saved_path.read_text())
    current = to_dict(config)
    diffs = [f"{k}: run has {get_path(saved, k)!r}, now {get_path(current, k)!r}"
             for k in RESUME_KEYS if get_path(saved, k) != get_path(current, k)]
    if diffs:
        raise ConfigError(f"cannot resume {run_dir}: key settings differ — " + "; ".join(diffs),
                          hint="resume with the run's own settings, or start a new run folder")


class Trainer:
    """Trains an encoder from a :class:`TrainConfig`. ``run()`` returns the path of the exported encoder."""

    def __init__(self, config: TrainConfig, *, resume: bool = False,
                 on_step: Callable[[StepRecord], None] | None = None, log: Callable[[str], None] = print):
        self.config, self.resume, self.on_step, self.log = config, resume, on_step, log
        self.run_dir = Path(config.out)
        self.device = resolve_device(config.device)
        self.use_bf16 = config.amp and (self.device.type == "cuda" or cpu_has_native_bf16())
        if config.amp and not self.use_bf16:
            log("note: amp is on but this CPU has no native bf16 (avx512_bf16 / amx_bf16): training in fp32, "
                "since emulated bf16 is ~20x slower")

    # ------------------------------------------------------------------ setup
    def _prepare(self) -> None:
        cfg = self.config
        registry = get_registry()
        names = registry.parse_stylizer_list(cfg.synth.stylizers)
        from ..data.steps import StepBatches

        extra: list[Path] = []
        if cfg.data.real_photos:
            from ..data.assets import real_photo_paths

            extra = real_photo_paths()
            if not extra:
                self.log("note: data.real_photos is set but no real photos were found in installed packages")
        contents = collect_images(cfg.data.content, "content", extra)
        styles = collect_images(cfg.data.style, "style")
        self.data = StepBatches(contents, styles, cfg.batch_size, cfg.synth.size, cfg.seed)

        torch.manual_seed(cfg.seed)
        self.synth = BatchSynthesizer(
            {n: load_stylizer(n, device=self.device, random_init=cfg.synth.random_init) for n in names},
            cfg.synth.weights, device=self.device, seed=cfg.seed,
            autocast_dtype=torch.bfloat16 if cfg.synth.autocast else None)
        self.model = build_encoder(cfg).to(self.device)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"encoder {cfg.encoder.name!r} has no trainable parameters with these options")
        self.optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        decay, every = cfg.optim.lr_decay, cfg.optim.decay_every
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: decay ** (s // every))
        # bf16 autocast needs no loss scaling; a scaler is kept only for fp16 on CUDA.
        self.scaler: torch.amp.GradScaler | None = None
        self.loss = SupConLoss(cfg.loss.temperature, cfg.loss.gt_weight)
        self.start_step = 0

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------ state
    def save_checkpoint(self, step: int) -> Path:
        state = {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": _rng_state(),
        }
        return atomic_write(self.run_dir / CHECKPOINT, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> int:
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            raise ConfigError(f"cannot resume: no checkpoint at {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        return int(state["step"])

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / "config.yaml",
                     lambda tmp: Path(tmp).write_text(yaml.safe_dump(to_dict(self.config), sort_keys=False)))
        meta = {"seed": self.config.seed, "device": str(self.device), "versions": package_versions(),
                "plugins": get_registry().plugin_versions(), "resumed_from": self.start_step or None,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write(self.run_dir / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))

    # ------------------------------------------------------------------ loop
    def train_step(self, step: int, batch: dict[str, Any]) -> StepRecord:
        started = time.perf_counter()
        synth = self.synth(batch["contents"], batch["styles"], batch["content_ids"], batch["style_ids"], step=step)
        images, labels, is_source = encoder_batch(synth)
        self.optimizer.zero_grad(set_to_none=True)
        chunks = split_into_chunks(images, self.config.chunk_size)
        if hasattr(self.model, "frozen_features"):
            # Features of frozen branches are computed once, not again in the gradient pass.
            with self._autocast():
                frozen = [self.model.frozen_features(chunk) for chunk in chunks]
            chunks = [(chunk, feats) if feats is not None else chunk for chunk, feats in zip(chunks, frozen)]
        loss, _ = accumulated_step(self.model, chunks,
                                   lambda emb: self.loss(emb, labels, is_source),
                                   scaler=self.scaler, autocast=self._autocast)
        value = float(loss)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {value} at step {step}; stopped before the optimizer step",
                hint=f"the last good checkpoint is {self.run_dir / CHECKPOINT}; lower optim.lr or check the data")
        self.optimizer.step()
        self.scheduler.step()
        seconds = time.perf_counter() - started
        return StepRecord(step=step, loss=value, lr=self.scheduler.get_last_lr()[0], seconds=round(seconds, 4),
                          images_per_s=round(len(images) / max(seconds, 1e-9), 2), methods=method_histogram(synth),
                          skipped=len(batch["skipped"]))

    def run(self) -> Path:
        from ..data.steps import step_loader

        self._prepare()
        if self.resume:
            _check_resume(self.run_dir, self.config)
            self.start_step = self.load_checkpoint()
            # Records of steps that will be run again are dropped (steps are 0-based here).
            drop_jsonl_records(self.run_dir / "metrics.jsonl", lambda r: r["step"] < self.start_step)
            self.log(f"resuming {self.run_dir} at step {self.start_step}")
        elif (self.run_dir / CHECKPOINT).exists():
            raise ConfigError(f"{self.run_dir} already holds a run", hint="pass --resume to continue it, or choose another --out")
        self._write_run_files()
        cfg = self.config
        total_skipped = 0
        with open(self.run_dir / "metrics.jsonl", "a") as metrics:
            for batch in step_loader(self.data, self.start_step, cfg.steps, cfg.data.workers):
                step = int(batch["step"])
                record = self.train_step(step, batch)
                total_skipped += record.skipped
                if step % cfg.log_every == 0 or step == cfg.steps - 1:
                    metrics.write(json.dumps(record.as_dict()) + "\n")
                    metrics.flush()
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                    self.save_checkpoint(step + 1)
                if self.on_step is not None:
                    self.on_step(record)
        if total_skipped:
            self.log(f"skipped {total_skipped} unreadable image(s) during training (see warnings)")
        self.model.eval()
        return export_encoder(self.model, cfg, self.run_dir / ENCODER_EXPORT, cfg.steps)


def train(config: TrainConfig, **kwargs: Any) -> Path:
    """Run training; returns the exported encoder path."""
    return Trainer(config, **kwargs).run()
