"""Embedding images with a trained encoder, finding the encoder a user points at, and evaluating a test set."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import WeightsError
from ..specs import StyleEncoder


class _SquashedImages(Dataset):
    def __init__(self, paths: Sequence[str | Path], size: int):
        self.paths, self.size = [str(p) for p in paths], size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from ..data.folder import load_image
        from ..errors import DataError

        try:
            image = load_image(self.paths[index])
        except DataError as err:  # reported by the main process (a worker's exception would carry its traceback)
            return {"index": index, "error": err.message}
        squashed = torch.nn.functional.interpolate(image[None], size=(self.size, self.size), mode="bilinear",
                                                   antialias=True, align_corners=False)[0]
        return {"index": index, "image": squashed}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [item for item in items if "image" in item]
    return {"images": torch.stack([item["image"] for item in good]) if good else None,
            "indices": [item["index"] for item in good],
            "errors": [(item["index"], item["error"]) for item in items if "error" in item]}


def input_size(model: StyleEncoder, default: int = 256) -> int:
    """The largest square side any branch of ``model`` looks at (images are squashed to it once)."""
    return max(model.input_sizes) if model.input_sizes else default


@torch.inference_mode()
def embed_paths(model: torch.nn.Module, paths: Sequence[str | Path], *, device: str | torch.device = "cpu",
                batch_size: int = 32, workers: int = 2, amp: bool = False, size: int | None = None,
                progress: Callable[[int], None] | None = None,
                skipped: list[tuple[int, str]] | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings ``[N, D]`` of the images at ``paths``, in order.

    Images are squashed (resized without cropping) to ``size`` — by default the largest branch size
    of the encoder, so each branch then resizes from a common square — and batched.

    An unreadable image raises a :class:`~nstzoo.errors.DataError` naming it; with a ``skipped`` list,
    it is recorded there as ``(index, reason)`` and left out, so the result has ``N - len(skipped)``
    rows, in order.
    """
    from ..errors import DataError

    device = torch.device(device)
    model = model.eval().to(device)
    loader = DataLoader(_SquashedImages(paths, size or input_size(model)), batch_size=batch_size,
                        num_workers=workers, shuffle=False, collate_fn=_collate)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    chunks = []
    for batch in loader:
        if batch["errors"]:
            if skipped is None:
                raise DataError(batch["errors"][0][1], hint="remove or replace the file")
            skipped.extend(batch["errors"])
        if batch["images"] is not None:
            with autocast:
                emb = model(batch["images"].to(device))
            chunks.append(torch.nn.functional.normalize(emb.float(), dim=1).cpu())
        if progress:
            progress(len(batch["indices"]) + len(batch["errors"]))
    dim = getattr(model, "embed_dim", 0)
    return torch.cat(chunks).numpy().astype(np.float32) if chunks else np.zeros((0, dim), np.float32)


def resolve_encoder(weights: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load an encoder from an exported ``.safetensors`` file or a run folder.

    A run folder gives its ``encoder.safetensors`` when training finished, else its last checkpoint
    rebuilt with the run's ``config.yaml``.
    """
    from ..weights import load_encoder, read_metadata

    path = Path(weights)
    if path.is_file():
        return load_encoder(path, device=device), read_metadata(path)
    if path.is_dir():
        export = path / "encoder.safetensors"
        if export.is_file():
            return load_encoder(export, device=device), read_metadata(export)
        if (path / "checkpoints" / "last.pt").is_file() and (path / "config.yaml").is_file():
            model, meta = encoder_from_checkpoint(path)
            return model.to(device), meta
    raise WeightsError(f"no encoder at {path}: expected an exported .safetensors file or a run folder "
                       "with encoder.safetensors or checkpoints/last.pt + config.yaml")


def encoder_from_checkpoint(run_dir: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a run's encoder from ``config.yaml`` and ``checkpoints/last.pt`` (eval mode, CPU)."""
    from ..config import from_dict
    from ..learner.config import TrainConfig
    from ..learner.trainer import RUN_KIND, build_encoder
    from ..runs import RunFolder, load_run_config

    run = RunFolder(Path(run_dir), RUN_KIND)
    config = from_dict(TrainConfig, load_run_config(run.path))
    model = build_encoder(config)
    state = run.read_checkpoint()
    model.load_state_dict(state["modules"]["model"])
    return model.eval(), {"name": config.encoder.name, "step": int(state["step"]), "config": config,
                          "source": str(run.checkpoint_path)}


def evaluate_testset(weights: Path, testset: Path, *, device: Any = "cpu", batch_size: int = 32, workers: int = 2,
                     progress: Any = None) -> dict[str, Any]:
    """Embed a test set's images with an encoder and compute the paper's metrics."""
    from .manifest import manifest_arrays, read_manifest
    from .metrics import evaluate

    listed = read_manifest(testset)
    model, meta = resolve_encoder(weights, device=device)
    skipped: list[tuple[int, str]] = []
    embeddings = embed_paths(model, [testset / r.path for r in listed], device=device, batch_size=batch_size,
                             workers=workers, progress=progress, skipped=skipped)
    # Unreadable images leave the evaluation, counted and named; the rest is measured as usual.
    bad = {index for index, _ in skipped}
    rows = [row for i, row in enumerate(listed) if i not in bad]
    result = evaluate(embeddings, **manifest_arrays(rows))
    result["skipped"] = [{"path": str(testset / listed[i].path), "reason": reason} for i, reason in skipped]
    result["encoder"] = {"weights": str(weights), "name": meta.get("name"),
                         "step": (meta.get("config") or {}).get("step", meta.get("step"))}
    result["testset"] = str(testset)
    return result
