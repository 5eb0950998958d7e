"""``nstzoo quickstart``: the embedded default, offline, with before/after numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..hookspecs import hookimpl
from rich.table import Table

from .common import info, out_console, print_json, progress_bar


def quickstart(
    out: Annotated[Path, typer.Option(help="Output folder (data, test set, run, encoders, summary.json).")] = Path("quickstart-out"),
    steps: Annotated[int | None, typer.Option(help="Training steps (default from the embedded config).")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="A quickstart YAML (sections quickstart:, train:) layered over the embedded one "
                               "(nstzoo/configs/quickstart.yaml, also at configs/quickstart.yaml).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a key, e.g. --set train.optim.lr=1e-3 --set quickstart.test_styles=8.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print summary.json on stdout.")] = False,
) -> None:
    """Generate data, build a held-out test set, evaluate, train, evaluate again — all offline."""
    from ..config import build_config_data
    from ..errors import ConfigError
    from ..quickstart import default_config, run_quickstart
    from .learner import print_metrics

    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: must be >= 1")
    overrides = build_config_data([config] if config else [], list(set_ or []),
                                  {"train.steps": steps} if steps is not None else {})
    total = overrides.get("train", {}).get("steps") or default_config()["train"]["steps"]
    with progress_bar("training", total) as bar:
        summary = run_quickstart(
            out, overrides=overrides, device=device, log=info,
            progress=lambda kind, record: bar.advance(1, status=f"loss {record.loss:.3f} {record.images_per_s:.1f} img/s"),
            show_metrics=None if json_output else (lambda result, title: print_metrics(result, title)))
    if json_output:
        print_json(summary)
        return
    print_summary(summary)
    info(f"stylizers: {', '.join(summary['stylizers'])}; {summary['steps']} steps; VGG branch: {summary['vgg']}; "
         f"{summary['seconds']:.0f} s. Written: {out / 'summary.json'}, {summary['files']['trained']}, "
         f"{summary['files']['compare']}")
    info(f"[green]report[/]: {summary['files']['report']}")


def print_summary(summary: dict) -> None:
    """Before/after with the training-free floors: one row per encoder, means over the test set's methods."""
    table = Table("encoder", "style mAP", "style IR-1", "content mAP", "content IR-1",
                  title="ALADIN-NST quickstart (mean over methods, %)",
                  caption="style: higher is better; content: lower is better; floors are training-free",
                  caption_justify="left")
    rows = [("untrained", summary["before"]), ("trained", summary["after"])]
    rows += [(f"{name} (floor)", result) for name, result in summary.get("floors", {}).items()]
    for label, result in rows:
        mean = result["mean"]
        table.add_row(label, *(f"{mean[g][m]:.2f}" for g, m in (("style", "mAP"), ("style", "IR-1"),
                                                                 ("content", "mAP"), ("content", "IR-1"))))
    out_console.print(table)
    before, after = summary["before"]["mean"]["style"]["mAP"], summary["after"]["mean"]["style"]["mAP"]
    if before:
        info(f"style mAP: trained / untrained = {after / before:.2f}x")


@hookimpl
def register_commands(app: typer.Typer) -> None:
    """The learner's commands join the CLI through the plugin hook any third party uses."""
    register(app)


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
