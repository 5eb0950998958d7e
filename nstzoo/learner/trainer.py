"""The ALADIN-NST trainer: synthesize, embed, SupCon over style ids with logit accumulation, Adam.

The run folder, resume rule, checkpoints and divergence handling are the run engine's
(:mod:`nstzoo.runs`); this module owns the step. ``encoder.safetensors`` is written at the end with the
encoder's ``export_config()`` in its header. A non-finite loss, gradient or parameter stops the run
before the optimizer step, so ``checkpoints/last.pt`` still holds the last good state.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import resolve_device, to_dict
from ..errors import ConfigError, DataError, NstzooError
from ..registry import get_registry
from ..runs import RunFolder, RunInterrupted, TrainingDiverged, all_finite
from ..specs import StyleEncoder
from ..weights import load_stylizer, save_safetensors
from .accumulate import accumulated_step, split_into_chunks
from .config import MAY_CHANGE_ON_RESUME, TrainConfig
from .distributed import (all_gather_rows, all_reduce_gradients, all_reduce_sum, any_rank, broadcast_object,
                          broadcast_parameters, from_environment)
from .loss import SupConLoss
from .synth import BatchSynthesizer, encoder_batch, method_histogram

ENCODER_EXPORT = "encoder.safetensors"
RUN_KIND = "encoder"


@dataclass
class StepRecord:
    """One line of ``metrics.jsonl``: ``step`` counts optimizer steps completed (1-based)."""

    step: int
    loss: float
    lr: float
    seconds: float
    images_per_s: float
    methods: dict[str, int]
    skipped: int
    auxiliary_loss: float | None = None

    def as_dict(self) -> dict[str, Any]:
        record = dict(self.__dict__)
        if record["auxiliary_loss"] is None:
            del record["auxiliary_loss"]
        return record


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX); emulated bf16 is far slower than fp32."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def collect_images(specs: list[str], what: str, extra: list[Path] = ()) -> Any:
    """One image source over folders, shard sets (``shards.json``) and tar globs, plus loose files."""
    from ..data.shards import open_sources

    source = open_sources(specs, extra) if (specs or extra) else []
    if not len(source):
        raise DataError(f"no {what} images: give --{what} DIR or shards (or data.{what} in the config)")
    return source


def build_encoder(config: TrainConfig) -> StyleEncoder:
    """The configured encoder, built by its plugin's factory (:meth:`nstzoo.registry.Registry.build_encoder`)."""
    return get_registry().build_encoder(config.encoder.name, config.encoder.options)


def export_encoder(model: StyleEncoder, config: TrainConfig, path: Path, step: int) -> Path:
    """Write the encoder with ``{"encoder": name, "options": export_config(), "step"}`` in the header.

    ``export_config()`` gives the options that rebuild the architecture without the weight files it
    was first built from (the state dict carries every weight); :func:`nstzoo.load_encoder` reads it.
    """
    return save_safetensors(path, model.state_dict(), kind="encoder", name=config.encoder.name,
                            config={"encoder": config.encoder.name, "options": model.export_config(), "step": step})


class Trainer:
    """Trains an encoder from a :class:`TrainConfig`. ``run()`` returns the path of the exported encoder.

    Under ``torchrun`` each process trains its share of the global batch (:mod:`.distributed`).
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False,
                 on_step: Callable[[StepRecord], None] | None = None, log: Callable[[str], None] = print):
        self.config, self.resume, self.on_step, self.log = config, resume, on_step, log
        self.run_dir = Path(config.out)
        self.device = resolve_device(config.device)
        self.job = from_environment(self.device.type)
        if self.job.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.job.local_rank)
            torch.cuda.set_device(self.device)
        if not self.job.is_main:  # one voice: progress and notes come from rank 0
            self.on_step, self.log = None, (lambda message: None)
        self.use_bf16 = config.amp and (self.device.type == "cuda" or cpu_has_native_bf16())
        if config.amp and not self.use_bf16:
            self.log("note: amp is on but this CPU has no native bf16 (avx512_bf16 / amx_bf16): training in fp32, "
                     "since emulated bf16 is ~20x slower")
        self._terminate = False

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
        self.data = StepBatches(contents, styles, cfg.batch_size, cfg.synth.size, cfg.seed,
                                rank=self.job.rank, world_size=self.job.world_size)

        # Every rank builds the same model from the run seed; dropout draws differ per rank.
        torch.manual_seed(cfg.seed)
        self.synth = BatchSynthesizer(
            {n: load_stylizer(n, device=self.device, random_init=cfg.synth.random_init) for n in names},
            cfg.synth.weights, device=self.device, seed=cfg.seed,
            autocast_dtype=torch.bfloat16 if cfg.synth.autocast else None)
        self.model = build_encoder(cfg).to(self.device)
        broadcast_parameters(self.model, self.job)
        torch.manual_seed(cfg.seed + 1_000_003 * self.job.rank)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"encoder {cfg.encoder.name!r} has no trainable parameters with these options",
                              hint="training-free encoders (floors) are evaluated as they are: nstzoo eval / compare")
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
    def _state(self) -> dict[str, Any]:
        return {"modules": {"model": self.model.state_dict()},
                "optimizers": {"total": self.optimizer.state_dict()},
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def save_checkpoint(self, step: int) -> Path | None:
        """Checkpoint after ``step`` completed optimizer steps (rank 0; atomic; refused when non-finite)."""
        if not self.job.is_main:
            return None
        return self.run_folder.save_checkpoint(step, self._state())

    def load_checkpoint(self) -> int:
        state = self.run_folder.read_checkpoint()
        self.model.load_state_dict(state["modules"]["model"])
        self.optimizer.load_state_dict(state["optimizers"]["total"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.run_folder.restore_rng(state)
        if self.job.enabled:
            torch.manual_seed(int(state["step"]) * 7919 + self.job.rank)  # ranks' dropout streams stay apart
        return int(state["step"])

    # ------------------------------------------------------------------ loop
    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[n,3,S,S]`` (pinned on CUDA runs) -> float in [0, 1] on the device; the copy does not block."""
        return images.to(self.device, non_blocking=True).float().div_(255)

    def train_step(self, step: int, batch: dict[str, Any]) -> StepRecord:
        """One optimizer step on the batch of step index ``step`` (0-based); the record says ``step + 1``."""
        started = time.perf_counter()
        local = len(batch["contents"])
        # The stylizer of every sample is drawn for the global batch, then this rank's slice is taken.
        methods = self.synth.draw_methods(self.config.batch_size, step)[self.job.rank * local:(self.job.rank + 1) * local]
        synth = self.synth(self._to_device(batch["contents"]), self._to_device(batch["styles"]), batch["content_ids"],
                           batch["style_ids"], step=step, methods=methods)
        images, labels, is_source = encoder_batch(synth)
        if self.job.enabled:
            labels, _ = all_gather_rows(labels, self.job)
            is_source, _ = all_gather_rows(is_source, self.job)
        self.optimizer.zero_grad(set_to_none=True)
        chunks = split_into_chunks(images, self.config.chunk_size)
        # Features of frozen branches are computed once, not again in the gradient pass.
        with self._autocast():
            frozen = [self.model.frozen_features(chunk) for chunk in chunks]
        loss, _, auxiliary = accumulated_step(
            self.model, list(zip(chunks, frozen)), lambda emb: self.loss(emb, labels, is_source),
            scaler=self.scaler, autocast=self._autocast,
            forward=lambda model, chunk: model(*chunk),
            training_forward=lambda model, chunk: model.training_forward(*chunk),
            gather=(lambda emb: all_gather_rows(emb, self.job)) if self.job.enabled else None)
        all_reduce_gradients(self.model, self.job)
        auxiliary = all_reduce_sum(auxiliary, self.job)  # each rank holds its rows' share of the batch mean
        value = float(loss)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not (torch.isfinite(loss) and all_finite(grads)):
            what = f"loss became {value}" if not torch.isfinite(loss) else "a gradient became non-finite"
            raise TrainingDiverged(f"{what} at step {step + 1}; stopped before the optimizer step",
                                   hint=self.run_folder.divergence_hint())
        self.optimizer.step()
        self.scheduler.step()
        seconds = time.perf_counter() - started
        n_global = len(images) * self.job.world_size
        return StepRecord(step=step + 1, loss=value, lr=self.scheduler.get_last_lr()[0], seconds=round(seconds, 4),
                          images_per_s=round(n_global / max(seconds, 1e-9), 2), methods=method_histogram(synth),
                          skipped=len(batch["skipped"]),
                          auxiliary_loss=None if auxiliary is None else float(auxiliary))

    def _open_run_folder(self) -> None:
        """Rank 0 checks, locks and writes the run folder; an error there stops every rank."""
        from ..registry import get_registry

        cfg = self.config
        self.run_folder = RunFolder(self.run_dir, RUN_KIND, MAY_CHANGE_ON_RESUME)
        failure = None
        if self.job.is_main:
            try:
                self.run_folder.open(to_dict(cfg), resume=self.resume, seed=cfg.seed, device=str(self.device),
                                     extra_meta={"plugins": get_registry().plugin_versions(),
                                                 "world_size": self.job.world_size})
            except NstzooError as exc:
                failure = exc
        failure = broadcast_object(failure, self.job)
        if failure is not None:
            raise failure

    def run(self) -> Path:
        from ..data.steps import step_loader

        cfg = self.config
        # The folder is checked and locked before anything slow is built.
        self._open_run_folder()
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self._prepare()
            if self.resume:
                self.start_step = self.load_checkpoint()
                self.log(f"resuming {self.run_dir} at step {self.start_step}")
            total_skipped = 0
            with contextlib.ExitStack() as stack:
                metrics = stack.enter_context(self.run_folder.open_metrics()) if self.job.is_main else None
                loader = step_loader(self.data, self.start_step, cfg.steps, cfg.data.workers,
                                     pin_memory=self.device.type == "cuda")
                for batch in loader:
                    record = self.train_step(int(batch["step"]), batch)
                    total_skipped += record.skipped
                    done = record.step
                    if metrics is not None and (done % cfg.log_every == 0 or done == cfg.steps):
                        self.run_folder.log(metrics, record.as_dict())
                    stop = any_rank(self._terminate, self.job, self.device)
                    if done % cfg.checkpoint_every == 0 or done == cfg.steps or stop:
                        self.save_checkpoint(done)
                    if self.on_step is not None:
                        self.on_step(record)
                    if stop:
                        raise RunInterrupted(f"stopped by SIGTERM after step {done}; checkpoint written",
                                             hint=f"continue with the same command and --resume ({self.run_dir})")
            self.synth.guard.poll(wait=True)  # on CUDA the last steps' output checks finish here
            if total_skipped:
                self.log(f"skipped {total_skipped} unreadable image(s) during training (see warnings)")
            self.model.eval()
            # A resume with fewer steps than done exports the checkpoint's step, not the requested one.
            final_step = max(cfg.steps, self.start_step)
            if not self.job.is_main:
                return self.run_dir / ENCODER_EXPORT
            return export_encoder(self.model, cfg, self.run_dir / ENCODER_EXPORT, final_step)
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.run_folder.close()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # Finish the step in flight, checkpoint, then stop: preemption loses at most the current step.
        self._terminate = True


def train(config: TrainConfig, **kwargs: Any) -> Path:
    """Run training; returns the exported encoder path."""
    return Trainer(config, **kwargs).run()
