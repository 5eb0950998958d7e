"""Train a VGG-family stylizer (AdaIN, SANet) on your own content and style folders.

One small loop serves every method: Adam over the method's trainable parts (the VGG encoder stays
frozen), inverse learning-rate decay ``lr / (1 + lr_decay * step)`` as in the original code bases,
an atomic checkpoint (model, optimizer, step, RNG states) that a resumed run continues from
exactly, a ``metrics.jsonl`` log, and a final safetensors export that
:func:`nstzoo.load_stylizer` reads (``weights=out_dir/<name>.safetensors``).

Losses (VGG features from a frozen normalised VGG-19 loaded from ``vgg``):

- AdaIN (Huang & Belongie 2017): ``content_weight * Lc + style_weight * Ls`` with Lc the MSE between
  the output's relu4_1 and the AdaIN target, Ls the MSE of channel means and stds over
  relu1_1..relu4_1.
- SANet (Park & Lee 2019): ``1*Lc + 3*Ls + 50*Lid1 + 1*Lid2``: Lc on normalised relu4_1 and relu5_1,
  Ls over relu1_1..relu5_1, identity losses on pixels (Lid1) and features (Lid2) of the content and
  style stylised with themselves.

CAST is not trainable here (GAN + contrastive training, see :mod:`nstzoo.plugins.cast`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.folder import list_images, load_image
from ..errors import ConfigError, DataError
from ..nn.checkpoints import read_official_state
from ..nn.stats import adain, mean_std, mean_variance_norm
from ..nn.vgg import TAPS, NormalisedVGG19, random_official_vgg_state, select_vgg_keys
from ..weights import atomic_write, read_checkpoint, save_safetensors

LAYERS = list(TAPS)  # relu1_1 .. relu5_1
REQUIRED = ("content_dir", "style_dir", "out_dir")
DEFAULTS: dict[str, Any] = {
    "steps": 160_000, "batch_size": 8, "size": 256, "load_size": None, "lr": 1e-4, "lr_decay": 5e-5,
    "vgg": None, "random_init_vgg": False, "resume": False, "seed": 0, "device": "cpu",
    "checkpoint_every": 1000, "content_weight": 1.0, "style_weight": None,
}
# Fields a resumed run must share with the checkpoint (steps may grow, the device may change).
RESUME_KEYS = ("method", "batch_size", "size", "load_size", "lr", "lr_decay", "seed", "content_weight", "style_weight")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def _mse(a: Tensor, b: Tensor) -> Tensor:
    return F.mse_loss(a, b)


def _style_loss(feats: list[Tensor], targets: list[Tensor]) -> Tensor:
    loss = feats[0].new_zeros(())
    for feat, target in zip(feats, targets):
        (m1, s1), (m2, s2) = mean_std(feat), mean_std(target)
        loss = loss + _mse(m1, m2) + _mse(s1, s2)
    return loss


def adain_losses(model: nn.Module, vgg: NormalisedVGG19, content: Tensor, style: Tensor,
                 cfg: dict[str, Any]) -> dict[str, Tensor]:
    """AdaIN losses for a batch of crops in [0, 1]; returns named scalars including ``total``."""
    layers = LAYERS[:4]
    style_feats = vgg.taps(style, layers)
    target = adain(vgg.taps(content, ["relu4_1"])[0], style_feats[-1])
    output_feats = vgg.taps(model.decoder(target), layers)
    content_loss = _mse(output_feats[-1], target)
    style_loss = _style_loss(output_feats, style_feats)
    total = cfg["content_weight"] * content_loss + cfg["style_weight"] * style_loss
    return {"content": content_loss, "style": style_loss, "total": total}


def sanet_losses(model: nn.Module, vgg: NormalisedVGG19, content: Tensor, style: Tensor,
                 cfg: dict[str, Any]) -> dict[str, Tensor]:
    """SANet losses (1 Lc + 3 Ls + 50 Lid1 + 1 Lid2, content weight scaling Lc)."""
    content_feats, style_feats = vgg.taps(content, LAYERS), vgg.taps(style, LAYERS)

    def decode(c: list[Tensor], s: list[Tensor]) -> Tensor:
        return model.decoder(model.transform(c[3], s[3], c[4], s[4]))

    output_feats = vgg.taps(decode(content_feats, style_feats), LAYERS)
    content_loss = sum(_mse(mean_variance_norm(output_feats[i]), mean_variance_norm(content_feats[i]))
                       for i in (3, 4))
    style_loss = _style_loss(output_feats, style_feats)
    content_id, style_id = decode(content_feats, content_feats), decode(style_feats, style_feats)
    identity1 = _mse(content_id, content) + _mse(style_id, style)
    identity2 = sum(_mse(a, b) for a, b in zip(vgg.taps(content_id, LAYERS), content_feats)) + \
        sum(_mse(a, b) for a, b in zip(vgg.taps(style_id, LAYERS), style_feats))
    total = cfg["content_weight"] * content_loss + cfg["style_weight"] * style_loss + 50 * identity1 + identity2
    return {"content": content_loss, "style": style_loss, "identity1": identity1, "identity2": identity2,
            "total": total}


METHODS: dict[str, tuple[Callable[..., dict[str, Tensor]], tuple[str, ...], float]] = {
    # method -> (losses, trainable sub-modules, default style weight)
    "adain": (adain_losses, ("decoder",), 10.0),
    "sanet": (sanet_losses, ("decoder", "transform"), 3.0),
}


def _build(method: str) -> nn.Module:
    if method == "adain":
        from ..plugins.adain import AdaINStylizer

        return AdaINStylizer()
    from ..plugins.sanet import SANetStylizer

    return SANetStylizer()


def resolve_config(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and values checked; a bad key or value is a :class:`ConfigError` naming it."""
    if method not in METHODS:
        raise ConfigError(f"stylizer {method!r} cannot be trained here; trainable: {', '.join(METHODS)}")
    unknown = sorted(set(config) - set(DEFAULTS) - set(REQUIRED))
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted([*REQUIRED, *DEFAULTS]))}")
    missing = [k for k in REQUIRED if config.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"training option(s) {', '.join(missing)} must be set")
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None or k not in DEFAULTS}}
    for key in ("content_dir", "style_dir", "out_dir", "vgg"):
        cfg[key] = None if cfg[key] is None else str(cfg[key])
    for key in ("steps", "batch_size", "size", "checkpoint_every"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"training option {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["size"] % 16:
        raise ConfigError(f"training option size must be a multiple of 16, got {cfg['size']}")
    cfg["load_size"] = int(cfg["load_size"] or 2 * cfg["size"])
    if cfg["load_size"] < cfg["size"]:
        raise ConfigError(f"training option load_size ({cfg['load_size']}) must be >= size ({cfg['size']})")
    if not (isinstance(cfg["lr"], (int, float)) and cfg["lr"] > 0):
        raise ConfigError(f"training option lr must be > 0, got {cfg['lr']!r}")
    cfg["style_weight"] = float(METHODS[method][2] if cfg["style_weight"] is None else cfg["style_weight"])
    if cfg["vgg"] is None and not cfg["random_init_vgg"]:
        raise ConfigError("training needs the normalised VGG-19 for its losses: set vgg to vgg_normalised.pth",
                          hint="or set random_init_vgg for a pipeline test (the result will not stylise well)")
    cfg["method"] = method
    return cfg


def _load_vgg_state(cfg: dict[str, Any]) -> dict[str, Tensor]:
    if cfg["vgg"] is not None:
        return select_vgg_keys(read_official_state(Path(cfg["vgg"])), upto="relu5_1", source=cfg["vgg"])
    full = random_official_vgg_state(torch.Generator().manual_seed(cfg["seed"]))
    return select_vgg_keys(full, upto="relu5_1", source="random VGG")


class _CropSampler:
    """Random images from a folder as ``[B,3,size,size]`` crops in [0, 1], driven by one generator.

    Shorter side resized to ``load_size`` then a random crop, as in the original training scripts.
    An unreadable file is warned about once and another one is drawn, so the draws (and therefore a
    resumed run) do not depend on which files were already known to be bad.
    """

    def __init__(self, root: str, size: int, load_size: int):
        self.paths = list_images(root)
        self.size, self.load_size = size, load_size
        self.bad: set[Path] = set()

    def _crop(self, image: Tensor, generator: torch.Generator) -> Tensor:
        h, w = image.shape[-2:]
        scale = self.load_size / min(h, w)
        hr, wr = max(self.load_size, round(h * scale)), max(self.load_size, round(w * scale))
        image = F.interpolate(image[None], size=(hr, wr), mode="bilinear", align_corners=False, antialias=True)[0]
        top = int(torch.randint(hr - self.size + 1, (1,), generator=generator))
        left = int(torch.randint(wr - self.size + 1, (1,), generator=generator))
        return image[:, top:top + self.size, left:left + self.size].clamp(0, 1)

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        crops = []
        for _ in range(n):
            for _attempt in range(max(16, 4 * len(self.paths))):
                path = self.paths[int(torch.randint(len(self.paths), (1,), generator=generator))]
                try:
                    image = load_image(path)
                except DataError as exc:
                    if path not in self.bad:
                        self.bad.add(path)
                        warnings.warn(f"skipping unreadable training image: {exc}", stacklevel=2)
                    continue
                crops.append(self._crop(image, generator))
                break
            else:
                raise DataError(f"no readable image found in {len(self.paths)} file(s) under "
                                f"{self.paths[0].parent}; {len(self.bad)} could not be decoded")
        return torch.stack(crops)


def _save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                     generator: torch.Generator, cfg: dict[str, Any]) -> None:
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "torch_rng": torch.get_rng_state(), "data_rng": generator.get_state(),
        "config": {k: cfg[k] for k in RESUME_KEYS},
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
            cfg: dict[str, Any]) -> int:
    saved = read_checkpoint(path)
    differing = [f"{k}: checkpoint {saved['config'].get(k)!r} != now {cfg[k]!r}"
                 for k in RESUME_KEYS if saved["config"].get(k) != cfg[k]]
    if differing:
        raise ConfigError(f"{path}: cannot resume a run with different settings ({'; '.join(differing)})",
                          hint="use a new out_dir, or the original settings")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    generator.set_state(saved["data_rng"])
    return int(saved["step"])


def _trim_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a run resumes from (they will be redone)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))


def train_stylizer(method: str, config: dict[str, Any]) -> Path:
    """Train ``method`` ("adain" or "sanet") and export its weights; returns the safetensors path.

    Config keys: content_dir, style_dir, out_dir (required); steps, batch_size, size (crop side,
    multiple of 16), load_size (shorter side before cropping, default 2*size), lr, lr_decay, vgg
    (path to vgg_normalised.pth), random_init_vgg (tests only), resume, seed, device,
    checkpoint_every, content_weight, style_weight (default: the method's).
    """
    cfg = resolve_config(method, config)
    losses_fn, trainable, _ = METHODS[method]
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg["device"])
    torch.manual_seed(cfg["seed"])

    vgg_state = _load_vgg_state(cfg)
    loss_vgg = NormalisedVGG19("relu5_1")
    loss_vgg.load_state_dict(vgg_state)
    loss_vgg.to(device).eval().requires_grad_(False)
    model = _build(method)
    model.encoder.load_state_dict({k: v for k, v in vgg_state.items() if int(k.split(".")[0]) < len(model.encoder)})
    model.to(device).requires_grad_(False)
    params = [p for name in trainable for p in getattr(model, name).parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=cfg["lr"])
    generator = torch.Generator().manual_seed(cfg["seed"])
    contents = _CropSampler(cfg["content_dir"], cfg["size"], cfg["load_size"])
    styles = _CropSampler(cfg["style_dir"], cfg["size"], cfg["load_size"])

    checkpoint, metrics = out_dir / CHECKPOINT, out_dir / METRICS
    step = 0
    if cfg["resume"] and checkpoint.is_file():
        step = _resume(checkpoint, model, optimizer, generator, cfg)
        _trim_metrics(metrics, step)
    elif metrics.exists():
        metrics.unlink()
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))

    model.train()
    with metrics.open("a") as log:
        while step < cfg["steps"]:
            lr = cfg["lr"] / (1.0 + cfg["lr_decay"] * step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            content = contents.batch(cfg["batch_size"], generator).to(device)
            style = styles.batch(cfg["batch_size"], generator).to(device)
            losses = losses_fn(model, loss_vgg, content, style, cfg)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            step += 1
            record = {"step": step, "lr": lr, **{k: float(v.detach()) for k, v in losses.items()}}
            if not math.isfinite(record["total"]):
                raise FloatingPointError(f"{method} training diverged at step {step}: {record}")
            log.write(json.dumps(record) + "\n")
            log.flush()
            if step % cfg["checkpoint_every"] == 0 or step == cfg["steps"]:
                _save_checkpoint(checkpoint, model, optimizer, step, generator, cfg)

    model.eval()
    options = {"alpha": model.alpha} if method == "adain" else {"max_tokens": model.max_tokens}
    return save_safetensors(out_dir / f"{method}.safetensors", model.state_dict(), kind="stylizer", name=method,
                            config=options)


__all__ = ["train_stylizer", "resolve_config", "adain_losses", "sanet_losses", "METHODS"]
