"""``nstzoo encoders list``: style encoders (built-in and plugins)."""

from __future__ import annotations

from typing import Annotated

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
