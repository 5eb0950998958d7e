"""The ALADIN-NST learner's commands: train, testset build, eval, embed, export."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..hookspecs import hookimpl
from rich.table import Table

from ..errors import ConfigError, DataError
from .common import info, out_console, print_json, progress_bar, resolve_device

testset_app = typer.Typer(help="Synthetic test sets: S styles x C contents per NST method.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def train(
    config: Annotated[list[Path] | None, typer.Option("--config", "-c", help="YAML config file(s); later ones win.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set optim.lr=3e-4 (repeatable).")] = None,
    stylizers: Annotated[str | None, typer.Option(help="Comma list of stylizers, e.g. neat,pama,sanet.")] = None,
    encoder: Annotated[str | None, typer.Option(help="Encoder name (nstzoo encoders list).")] = None,
    content: Annotated[list[Path] | None, typer.Option(
        help="Content images: a folder, a shard set (nstzoo data shard) or a tar glob (repeatable).")] = None,
    style: Annotated[list[Path] | None, typer.Option(
        help="Style images: a folder, a shard set or a tar glob (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Stylized images per step (target batch; paper 1024).")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Images per forward pass (logit accumulation).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    random_init: Annotated[bool, typer.Option(help="Let stylizers without weights run with random ones (pipeline tests).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Train the style encoder on on-the-fly stylizations (ALADIN-NST)."""
    from ..learner.config import build_train_config
    from ..learner.trainer import Trainer

    flags: dict[str, Any] = {"synth.stylizers": stylizers, "encoder.name": encoder, "out": str(out) if out else None,
                             "steps": steps, "batch_size": batch_size, "chunk_size": chunk_size, "device": device,
                             "seed": seed, "synth.random_init": True if random_init else None,
                             "data.content": [str(p) for p in content] if content else None,
                             "data.style": [str(p) for p in style] if style else None}
    cfg = build_train_config(list(config or []), list(set_ or []), flags)
    resolve_device(cfg.device)
    started = time.perf_counter()
    last: dict[str, Any] = {}
    with progress_bar("training", cfg.steps) as bar:
        def on_step(record: Any) -> None:
            last.update(record.as_dict())
            bar.advance(1, status=f"loss {record.loss:.4f}  {record.images_per_s:.1f} img/s")
            if not err_is_tty() and (record.step % max(1, cfg.steps // 10) == 0 or record.step == cfg.steps - 1):
                info(f"step {record.step + 1}/{cfg.steps}  loss {record.loss:.4f}  lr {record.lr:.3g}  "
                     f"{record.images_per_s:.1f} img/s")

        trainer = Trainer(cfg, resume=resume, on_step=on_step, log=info)
        exported = trainer.run()
    summary = {"run_dir": str(trainer.run_dir), "encoder": str(exported), "steps": cfg.steps,
               "final_loss": last.get("loss"), "seconds": round(time.perf_counter() - started, 2)}
    if json_output:
        print_json(summary)
    else:
        info(f"[green]done[/]: encoder exported to {exported}")


def err_is_tty() -> bool:
    from .common import err_console

    return err_console.is_terminal


@testset_app.command("build")
def testset_build(
    stylizers: Annotated[str, typer.Option(help="Comma list of stylizers, one test set each.")],
    content: Annotated[Path, typer.Option(help="Folder of content images.")],
    style: Annotated[Path, typer.Option(help="Folder of style images.")],
    out: Annotated[Path, typer.Option(help="Output folder (manifest.csv + images).")],
    styles: Annotated[int | None, typer.Option(help="Number of styles (default: all; paper 400).")] = None,
    contents: Annotated[int | None, typer.Option(help="Number of contents (default: all; paper 100).")] = None,
    size: Annotated[int, typer.Option(help="Image side in pixels (paper: 512).")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the style/content selection.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Contents stylized per forward pass.")] = 8,
    random_init: Annotated[bool, typer.Option(help="Allow random weights (pipeline tests).")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Stylize every content with every style by each stylizer; resumable after interruption."""
    from ..eval.testset import build_testset
    from ..registry import get_registry

    names = get_registry().parse_stylizer_list(stylizers)
    total = None
    with progress_bar("building test set", total) as bar:
        summary = build_testset(names, content, style, out, n_styles=styles, n_contents=contents, size=size,
                                seed=seed, device=resolve_device(device), random_init=random_init,
                                batch_size=batch_size, progress=lambda n: bar.advance(n), log=info)
    if json_output:
        print_json(summary)
    else:
        info(f"[green]test set[/] {out}: {summary['styles']} styles x {summary['contents']} contents x "
             f"{len(names)} method(s) = {summary['stylized']} images ({summary['made']} made, {summary['reused']} reused)")


def print_metrics(result: dict[str, Any], title: str = "") -> None:
    table = Table("method", "style mAP", "style IR-1", "style IR-5", "style IR-10", "content mAP", "content IR-1",
                  title=title or None)
    for name, m in [*result["methods"].items(), ("mean", result["mean"])]:
        s, c = m["style"], m["content"]
        table.add_row(name, f"{s['mAP']:.2f}", f"{s['IR-1']:.2f}", f"{s.get('IR-5', float('nan')):.2f}",
                      f"{s.get('IR-10', float('nan')):.2f}", f"{c['mAP']:.2f}", f"{c['IR-1']:.2f}")
    out_console.print(table)


def eval_command(
    weights: Annotated[Path, typer.Option(help="Exported encoder (.safetensors) or a run folder.")],
    testset: Annotated[Path, typer.Option(help="Test-set folder with manifest.csv.")],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="DataLoader workers.")] = 2,
    json_output: JsonFlag = False,
) -> None:
    """Style and content retrieval metrics (mAP, IR-k, in %) per method and averaged."""
    from ..eval.embed import evaluate_testset
    from ..eval.manifest import read_manifest

    n = len(read_manifest(testset, check_files=False))
    with progress_bar("embedding", n) as bar:
        result = evaluate_testset(weights, testset, device=resolve_device(device), batch_size=batch_size,
                                  workers=workers, progress=lambda k: bar.advance(k))
    for item in result["skipped"]:
        info(f"[yellow]skipped[/] {item['reason']}")
    if json_output:
        print_json(result)
    else:
        print_metrics(result)
        if result["skipped"]:
            info(f"{len(result['skipped'])} unreadable image(s) left out of the evaluation")


def embed_command(
    weights: Annotated[Path, typer.Option(help="Exported encoder (.safetensors) or a run folder.")],
    input: Annotated[list[Path], typer.Option("--input", "-i", help="Image folder(s) or image file(s).")],
    out: Annotated[Path, typer.Option(help="Output .npz: embeddings [N,D] float32 and paths [N].")],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="DataLoader workers.")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Write L2-normalised style embeddings of images, with their paths, to an .npz file.

    Unreadable images are skipped, counted and named on stderr (and under "skipped" with --json).
    """
    import numpy as np

    from ..data.folder import list_images
    from ..eval.embed import embed_paths, resolve_encoder
    from ..outputs import check_output_file
    from ..weights import atomic_write

    check_output_file(out, overwrite=overwrite, option="--out", suffixes=(".npz",),
                      inputs=[("--input", p) for p in input] + [("--weights", weights)])

    paths: list[Path] = []
    for item in input:
        if item.is_dir():
            paths.extend(list_images(item))
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"--input {item}: no such file or folder")
    dev = resolve_device(device)
    model, _ = resolve_encoder(weights, device=dev)
    skipped: list[tuple[int, str]] = []
    with progress_bar("embedding", len(paths)) as bar:
        embeddings = embed_paths(model, paths, device=dev, batch_size=batch_size, workers=workers,
                                 progress=lambda k: bar.advance(k), skipped=skipped)
    bad = {index for index, _ in skipped}
    kept = [p for i, p in enumerate(paths) if i not in bad]
    for _, reason in skipped:
        info(f"[yellow]skipped[/] {reason}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, embeddings=embeddings, paths=np.array([str(p) for p in kept]))

    atomic_write(out, write)
    record = {"out": str(out), "count": len(kept), "dim": int(embeddings.shape[1]),
              "skipped": [{"path": str(paths[i]), "reason": reason} for i, reason in skipped]}
    print_json(record) if json_output else info(f"[green]wrote[/] {len(kept)} embeddings ({embeddings.shape[1]}-D) to {out}"
                                                + (f"; skipped {len(skipped)} unreadable image(s)" if skipped else ""))


def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A training run folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Target .safetensors file.")],
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Export a run's encoder (last checkpoint) as safetensors with its config in the header."""
    from ..eval.embed import encoder_from_checkpoint
    from ..learner.trainer import export_encoder
    from ..outputs import check_output_file, write_error
    from ..runs import CHECKPOINT, CONFIG

    if output.suffix != ".safetensors":
        raise ConfigError(f"--output {output}: use a .safetensors file name")
    if not (run_dir / CHECKPOINT).is_file() or not (run_dir / CONFIG).is_file():
        raise DataError(f"{run_dir} is not a run folder (needs {CONFIG} and {CHECKPOINT})")
    check_output_file(output, overwrite=overwrite, inputs=[("run's checkpoint", run_dir / CHECKPOINT)])
    # The checkpoint is the latest state, also for a run that stopped early.
    model, meta = encoder_from_checkpoint(run_dir)
    try:  # non-finite weights are refused inside (save_safetensors), before anything is written
        path = export_encoder(model, meta["config"], output, meta["step"])
    except OSError as err:
        raise write_error(output, err) from None
    record = {"run_dir": str(run_dir), "output": str(path), "step": meta["step"]}
    print_json(record) if json_output else info(f"[green]exported[/] {run_dir} (step {meta['step']}) -> {path}")


@hookimpl
def register_commands(app: typer.Typer) -> None:
    """The learner's commands join the CLI through the plugin hook any third party uses."""
    register(app)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.add_typer(testset_app, name="testset")
    app.command("eval")(eval_command)
    app.command("embed")(embed_command)
    app.command("export")(export_command)


__all__ = ["register", "print_metrics"]
