"""``nstzoo stylizers list|show|train``: the zoo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ConfigError
from ..registry import get_registry
from ..weights import weights_path
from .common import info, out_console, print_json

app = typer.Typer(help="The stylizer zoo: list, inspect and train stylizers.", no_args_is_help=True)


def weights_status(spec: Any) -> str:
    if not spec.needs_weights:
        return "not-needed"
    return "ready" if weights_path(spec.name).is_file() else "missing"


def describe(name: str) -> dict[str, Any]:
    registry = get_registry()
    spec = registry.stylizer(name)
    return {
        "name": spec.name, "summary": spec.summary, "plugin": registry.stylizer_plugin(name),
        "weights": weights_status(spec), "paper": spec.paper, "weight_files": list(spec.weight_files),
        "weights_path": str(weights_path(spec.name)) if spec.needs_weights else None,
        "weights_source": spec.weights_source, "trainable": spec.train is not None,
        "options": dict(spec.default_options),
    }


@app.command("list")
def list_stylizers(json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """List registered stylizers with their plugin and weights status (ready|missing|not-needed)."""
    rows = [describe(name) for name in get_registry().stylizers()]
    if json_output:
        print_json([{k: r[k] for k in ("name", "summary", "plugin", "weights")} for r in rows])
        return
    table = Table("name", "weights", "plugin", "summary")
    colour = {"ready": "green", "missing": "yellow", "not-needed": "dim"}
    for r in rows:
        table.add_row(r["name"], f"[{colour[r['weights']]}]{r['weights']}[/]", r["plugin"], r["summary"])
    out_console.print(table)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="Stylizer name.")],
         json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """Everything known about one stylizer: paper, weight files, where weights go, options."""
    row = describe(name)
    if json_output:
        print_json(row)
        return
    for key, value in row.items():
        out_console.print(f"[bold]{key}[/]: {value}")


@app.command("train")
def train(
    name: Annotated[str, typer.Argument(help="Stylizer to train (see `nstzoo stylizers list`).")],
    content: Annotated[Path, typer.Option(help="Folder of content images.")],
    style: Annotated[Path, typer.Option(help="Folder of style images.")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, metrics.jsonl, exported weights.")],
    config: Annotated[Path | None, typer.Option(help="YAML file with training options.")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    size: Annotated[int | None, typer.Option(help="Training crop size in pixels.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    vgg: Annotated[Path | None, typer.Option(help="Loss network weights (vgg_normalised.pth or .safetensors).")] = None,
    random_init_vgg: Annotated[bool, typer.Option(help="Random loss network (pipeline tests only).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's last checkpoint.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    install: Annotated[bool, typer.Option(help="Also copy the trained weights into the weights store.")] = False,
) -> None:
    """Train a stylizer on your own images with its original losses."""
    from .. import config as config_mod
    from .common import resolve_device

    spec = get_registry().stylizer(name)
    if spec.train is None:
        raise ConfigError(f"stylizer {name!r} cannot be trained in nstzoo",
                          hint="`nstzoo stylizers list` shows which can (trainable)")
    options: dict[str, Any] = config_mod.load_yaml(config) if config else {}
    overrides = {"content_dir": str(content), "style_dir": str(style), "out_dir": str(out), "steps": steps,
                 "batch_size": batch_size, "size": size, "lr": lr, "vgg": str(vgg) if vgg else None,
                 "random_init_vgg": random_init_vgg, "resume": resume, "seed": seed,
                 "device": str(resolve_device(device))}
    options.update({k: v for k, v in overrides.items() if v is not None})
    exported = spec.train(options)
    info(f"[green]trained {name}[/]: weights at {exported}")
    if install:
        import shutil

        from ..files import atomic_write

        target = atomic_write(weights_path(name), lambda tmp: shutil.copyfile(exported, tmp))
        info(f"installed into the weights store: {target}")
