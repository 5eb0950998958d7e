"""The paper's experiments, one command each: ``nstzoo ablate``, ``nstzoo compare``, ``nstzoo report``.

A built-in plugin: the commands join the CLI through ``register_commands``, like the learner's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table as RichTable

from ..hookspecs import hookimpl
from .common import info, out_console, print_json, progress_bar, resolve_device

if TYPE_CHECKING:  # pragma: no cover
    from ..eval.compare import Table

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result document as JSON on stdout.")]


_SHORT = {"style mAP": "mAP", "style IR-1": "IR-1", "content mAP": "c-mAP", "content IR-1": "c-IR-1"}


def print_table(table: Table) -> None:
    """A results table on stdout, one line per row (never folded: logs and pipes read it whole)."""
    from rich import box

    rich = RichTable(title=table.title, caption=table.note or None, caption_justify="left", box=box.SIMPLE_HEAD,
                     title_justify="left")
    previous = None
    # Two header lines: the group (test set) once over its first column, then the metric.
    for (group, metric), numeric in zip(table.split_columns(), table.numeric()):
        header = (group if group != previous else "") + "\n" + _SHORT.get(metric, metric)
        previous = group
        rich.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    for row in table.formatted():
        rich.add_row(*row)
    from rich.console import Console

    needed = out_console.measure(rich, options=out_console.options.update(max_width=10_000)).maximum
    console = out_console if needed <= out_console.width else Console(
        width=needed, file=out_console.file, highlight=False, force_terminal=out_console.is_terminal,
        no_color=out_console.no_color)
    console.print(rich)


def ablate(
    configs: Annotated[list[Path], typer.Argument(help="Experiment fragments, e.g. configs/ablations/*.yaml (the "
                                                       "file's stem names the experiment).")],
    base: Annotated[Path | None, typer.Option(help="Train config the fragments are layered on (default: the "
                                                   "profile's; paper: configs/paper.yaml).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: one run folder per experiment, testsets/, evals/, "
                                                  "ablation.md/.csv/.json (default runs/ablation-PROFILE).")] = None,
    profile: Annotated[str, typer.Option(help="paper | quick (offline stand-ins, minutes on 2 CPU cores) | a "
                                              "profile YAML file.")] = "paper",
    testset: Annotated[list[Path] | None, typer.Option(help="Ready test-set folder(s) instead of building them "
                                                            "(repeatable).")] = None,
    content: Annotated[list[Path] | None, typer.Option(help="Training content images folder (repeatable).")] = None,
    style: Annotated[list[Path] | None, typer.Option(help="Training style images folder (repeatable).")] = None,
    test_content: Annotated[Path | None, typer.Option(help="Held-out content images for the test sets.")] = None,
    test_style: Annotated[Path | None, typer.Option(help="Held-out style images for the test sets.")] = None,
    held_out: Annotated[str | None, typer.Option(help="Comma list of held-out methods (default: the "
                                                      "profile's, cast).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a train-config key in every experiment, "
                                                                 "e.g. --set steps=20 (repeatable).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda ...")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Train one encoder per experiment config and tabulate them on every test set (the paper's Table 1).

    Finished experiments are skipped and interrupted ones resume, so rerunning after a kill continues.
    """
    from ..eval.ablate import ABLATION_MD, ablation_table, load_profile, run_ablation

    chosen = load_profile(profile)
    if device is not None:
        resolve_device(device)
    out = out or Path("runs") / f"ablation-{chosen.name}"
    held = [m.strip() for m in held_out.split(",") if m.strip()] if held_out is not None else None
    document = run_ablation(configs, profile=chosen, out=out, base=base, overrides=list(set_ or []),
                            content=list(content or []), style=list(style or []), test_content=test_content,
                            test_style=test_style, testsets=list(testset or []), held_out=held, device=device,
                            log=info, progress=progress_bar)
    if json_output:
        print_json(document)
        return
    print_table(ablation_table(document))
    statuses = ", ".join(f"{e['name']} {e['status']}" for e in document["experiments"])
    info(f"{statuses}; {document['seconds']:.0f} s. Written: {out / ABLATION_MD} (.csv, .json); "
         f"HTML: nstzoo report {out}")


def compare(
    encoders: Annotated[list[str], typer.Option(help="Comma list of encoders: exported .safetensors files, run "
                                                     "folders, registered names with options (color-hist, "
                                                     "vgg-gram(stat=mean-std,vgg=vgg16-hed)); LABEL=ENTRY names a "
                                                     "row. Repeatable.")],
    testset: Annotated[list[Path], typer.Option(help="Test-set folder (manifest.csv); repeatable.")],
    out: Annotated[Path | None, typer.Option(help="Write compare.json and compare.md here (report: nstzoo report "
                                                  "OUT).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(help="DataLoader workers.")] = 0,
    queries: Annotated[int, typer.Option(help="Retrieval examples kept per method for the report.")] = 4,
    json_output: JsonFlag = False,
) -> None:
    """Evaluate encoders on the same test sets: Table 2 (style) and Table 3 (content) of the paper."""
    from ..errors import ConfigError
    from ..eval.compare import compare_encoders, compare_tables, parse_encoder_entries, testset_methods, write_compare
    from ..eval.manifest import read_manifest

    if batch_size < 1 or workers < 0 or queries < 0:
        raise ConfigError("--batch-size must be >= 1, --workers and --queries >= 0")
    entries = parse_encoder_entries(encoders)
    testset_methods(testset)  # manifests checked before any encoder is built
    if out is not None:
        from ..outputs import check_output_folder

        check_output_folder(out)
    dev = resolve_device(device)
    total = len(entries) * sum(len(read_manifest(t, check_files=False)) for t in testset)
    with progress_bar("embedding", total) as bar:
        document = compare_encoders(entries, testset, device=dev, batch_size=batch_size, workers=workers,
                                    queries=queries, progress=lambda n: bar.advance(n), log=info)
    if out is not None:
        written = write_compare(document, out)
        info(f"written: {', '.join(str(p) for p in written.values())}; HTML: nstzoo report {out}")
    if json_output:
        print_json(document)
        return
    for table in compare_tables(document):
        print_table(table)


def report(
    folder: Annotated[Path, typer.Argument(help="A run folder, an ablation output folder or a compare output "
                                                "folder.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file (default FOLDER/report.html).")] = None,
    testset: Annotated[list[Path] | None, typer.Option(help="Test set(s) to evaluate a run folder on, and to "
                                                            "show (repeatable).")] = None,
    thumb: Annotated[int, typer.Option(help="Thumbnail side in pixels.")] = 96,
    queries: Annotated[int, typer.Option(help="Retrieval queries shown per encoder and method.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ... (run folders with --testset).")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT even if it is not a page nstzoo report wrote.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Write one self-contained HTML page: tables, plots, stylization and retrieval grids, training curves."""
    from ..errors import ConfigError
    from ..eval.report import REPORT_NAME, collect, is_report, write_report
    from ..outputs import check_output_file

    if thumb < 16 or thumb > 512 or queries < 0:
        raise ConfigError(f"--thumb must be in [16, 512] and --queries >= 0 (got {thumb}, {queries})")
    target = output or folder / REPORT_NAME
    # A page this command wrote is replaced without asking: rerunning `report` is the normal update.
    check_output_file(target, overwrite=overwrite or is_report(target), suffixes=(".html", ".htm"))
    data = collect(folder, testsets=list(testset or []), device=resolve_device(device), log=info)
    path = write_report(data, target, thumb=thumb, queries=queries)
    if json_output:
        print_json({"report": str(path), "kind": data.kind, "source": str(folder)})
    else:
        info(f"[green]report[/] ({data.kind}): {path}")


@hookimpl
def register_commands(app: typer.Typer) -> None:
    """ablate, compare and report join the CLI through the plugin hook any third party uses."""
    register(app)


def register(app: typer.Typer) -> None:
    app.command("ablate")(ablate)
    app.command("compare")(compare)
    app.command("report")(report)


__all__ = ["register", "print_table"]
