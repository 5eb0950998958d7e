"""``nstzoo encoders list|export``: style encoders (built-in and plugins)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..registry import get_registry
from .common import out_console, print_json

app = typer.Typer(help="Style encoders.", no_args_is_help=True)


@app.command("list")
def list_encoders(json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """List registered style encoders and their default configuration."""
    registry = get_registry()
    rows = [{"name": n, "summary": r.spec.summary, "plugin": r.plugin, "paper": r.spec.paper,
             "default_config": dict(r.spec.default_config)} for n, r in registry.encoders().items()]
    if json_output:
        print_json(rows)
        return
    table = Table("name", "plugin", "summary")
    for r in rows:
        table.add_row(r["name"], r["plugin"], r["summary"])
    out_console.print(table)


@app.command("export")
def export_encoder(
    name: Annotated[str, typer.Argument(help="A registered encoder (nstzoo encoders list).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Target .safetensors file.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="A factory option: --set options.stat=mean-std "
                                                                 "(value read as YAML; repeatable).")] = None,
    options_json: Annotated[str | None, typer.Option(help="Factory options as one JSON object (applied before "
                                                          "--set), e.g. for nested options.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Save a registered encoder built with options (a training-free floor, an imported model) as a file
    that nstzoo eval / embed / compare / index read."""
    import json

    from ..config import apply_override
    from ..errors import ConfigError
    from ..eval.compare import export_registered
    from ..outputs import check_output_file, write_error
    from .common import info

    get_registry().encoder(name)  # an unknown name fails before anything else, with a close match
    data: dict[str, Any] = {"options": {}}
    if options_json is not None:
        try:
            parsed = json.loads(options_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--options-json: not valid JSON ({exc})") from None
        if not isinstance(parsed, dict):
            raise ConfigError(f"--options-json: expected a JSON object of options, got {type(parsed).__name__}")
        data["options"].update(parsed)
    for assignment in set_ or []:
        if not assignment.startswith("options."):
            raise ConfigError(f"--set {assignment!r}: only options.KEY=VALUE is accepted here",
                              hint=f"e.g. --set options.{assignment}")
        apply_override(data, assignment)
    check_output_file(output, overwrite=overwrite, suffixes=(".safetensors",))
    try:
        path = export_registered(name, data["options"], output)
    except OSError as err:
        raise write_error(output, err) from None
    record = {"encoder": name, "options": data["options"], "output": str(path)}
    print_json(record) if json_output else info(f"[green]exported[/] {name} -> {path}")
