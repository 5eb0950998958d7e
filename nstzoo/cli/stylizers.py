"""``nstzoo stylizers list|show|check|train``: the zoo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ConfigError
from ..registry import get_registry
from ..weights import weights_path
from .common import info, out_console, print_json, progress_bar

app = typer.Typer(help="The stylizer zoo: list, inspect, check and train stylizers.", no_args_is_help=True)


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
        "weights_source": spec.weights_source, "trainable": spec.recipe is not None,
        "options": dict(spec.default_options),
        # What `nstzoo stylize` can do with it: declared controls, plus colour preservation (any stylizer).
        "controls": sorted(set(spec.controls) | {"preserve_color"}),
        "training": _training_settings(spec),
    }


def _training_settings(spec: Any) -> dict[str, Any] | None:
    """What `nstzoo stylizers train NAME` takes for this stylizer: generic defaults and recipe options."""
    import dataclasses

    recipe = spec.recipe
    if recipe is None:
        return None
    from ..stylizer_training import StylizerTrainConfig

    generic = {f.name: getattr(StylizerTrainConfig(), f.name) for f in dataclasses.fields(StylizerTrainConfig)
               if f.name not in ("stylizer", "recipe")}
    options = dataclasses.asdict(recipe.options()) if recipe.options is not None else {}
    return {"defaults": {**generic, **dict(recipe.defaults)}, "recipe": options}


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


@app.command("check")
def check(
    name: Annotated[str, typer.Argument(help="Stylizer to check (see `nstzoo stylizers list`).")],
    weights: Annotated[str, typer.Option(help="random: seeded random weights, no files needed; store: the stored weights.")] = "random",
    device: Annotated[str, typer.Option(help="Where the checks run: cpu, cuda, auto ... (the device leg then moves "
                                             "the module to CUDA when there is one, else back to the CPU).")] = "cpu",
    size: Annotated[int, typer.Option(min=8, help="Side of the square test case in pixels (the other is 37x53 / 45x29).")] = 48,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Run the stylizer contract (shapes, [0, 1] range, batching, determinism, devices) as a plugin author would.

    Exits 2 with one line naming the stylizer and every failed check.
    """
    from ..errors import ContractError
    from ..testing import check_stylizer
    from .common import resolve_device

    if weights not in ("random", "store"):
        raise ConfigError(f"--weights must be 'random' or 'store', got {weights!r}")
    try:
        report = check_stylizer(name, device=resolve_device(device), weights=weights, size=size)  # type: ignore[arg-type]
    except ContractError as exc:
        if json_output:
            print_json({"name": name, "ok": False, "failures": exc.failures})
        raise
    if json_output:
        print_json(report.as_dict())
    else:
        from .common import err_console

        err_console.print(f"[green]ok[/]: stylizer {name!r} passed {len(report.passed)} contract checks in "
                          f"{report.seconds:.2f}s on {', '.join(dict.fromkeys(report.devices))}: "
                          f"{', '.join(report.passed)}", highlight=False, soft_wrap=True)


@app.command("train")
def train(
    name: Annotated[str, typer.Argument(help="Stylizer to train (see `nstzoo stylizers list`: trainable).")],
    content: Annotated[list[Path] | None, typer.Option(help="Folder of content images (repeatable).")] = None,
    style: Annotated[list[Path] | None, typer.Option(help="Folder of style images (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder: config.yaml, metrics.jsonl, checkpoints/, weights.")] = None,
    config: Annotated[list[Path] | None, typer.Option(
        "--config", "-c", help="YAML config (repeatable; later files win). Keys: see `nstzoo stylizers show NAME`.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a key: --set lr=3e-4, --set recipe.style_weight=5 (value parsed as YAML).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    size: Annotated[int | None, typer.Option(help="Training crop size in pixels (multiple of 16).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    vgg: Annotated[Path | None, typer.Option(help="Loss network weights (vgg_normalised.pth or .safetensors).")] = None,
    random_init_vgg: Annotated[bool, typer.Option(help="Random loss network (pipeline tests only).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's last checkpoint.")] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    install: Annotated[bool, typer.Option(help="Also copy the trained weights into the weights store.")] = False,
    force: Annotated[bool, typer.Option(help="With --install: replace weights already in the store.")] = False,
) -> None:
    """Train a stylizer on your own images with the objective its plugin declares (its recipe).

    Settings come from the recipe's defaults, then --config files, then --set, then the flags.
    """
    from ..stylizer_training import build_stylizer_config, train_stylizer

    if install and weights_path(name).exists() and not force:
        raise ConfigError(f"the weights store already holds {name}: {weights_path(name)}",
                          hint="add --force to replace them, or train without --install")
    flags = {"content": [str(p) for p in content] if content else None,
             "style": [str(p) for p in style] if style else None, "out": str(out) if out else None,
             "steps": steps, "batch_size": batch_size, "size": size, "lr": lr, "vgg": str(vgg) if vgg else None,
             "random_init_vgg": True if random_init_vgg else None, "seed": seed, "device": device}
    cfg = build_stylizer_config(name, list(config or []), list(set_ or []), flags)
    with progress_bar(f"training {name}", total=cfg.steps) as bar:
        exported = train_stylizer(name, cfg, resume=resume, log=info,
                                  on_step=lambda record: bar.advance(1, status=f"loss {record['total']:.4g}"))
    info(f"[green]trained {name}[/]: weights at {exported}")
    if install:
        import shutil

        from ..files import atomic_write

        target = atomic_write(weights_path(name), lambda tmp: shutil.copyfile(exported, tmp))
        info(f"installed into the weights store: {target}")
