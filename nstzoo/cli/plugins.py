"""``nstzoo plugins``: what is installed, which hooks each plugin implements, and load errors."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..registry import get_registry
from .common import out_console, print_json


def plugins(json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """List installed plugins, their hooks, what they register, and any load error."""
    registry = get_registry()
    registry.stylizers()  # collect, so registration errors are included
    rows = [info.as_dict() for info in registry.plugins.values()]
    if json_output:
        print_json(rows)
        return
    table = Table("plugin", "distribution", "version", "hooks", "registers", "status")
    for column in table.columns:
        column.overflow = "fold"  # wrap long names inside the cell rather than cut them with "…"
    for row in rows:
        registers = ", ".join(row["stylizers"] + [f"{e} (encoder)" for e in row["encoders"]])
        status = f"[red]{len(row['errors'])} error(s)[/red]" if row["errors"] else "[green]ok[/green]"
        table.add_row(row["name"], row["distribution"] or "-", row["version"] or "-", ", ".join(row["hooks"]),
                      registers, status)
    out_console.print(table)
    # Error texts go below the table, one plain line each: inside a table cell rich wraps them to the
    # terminal's (or, when piped, 80 columns') width, which breaks the very text a user searches for.
    for row in rows:
        for error in row["errors"]:
            out_console.print(f"error: plugin {row['name']!r}: {error}", markup=False, highlight=False,
                              soft_wrap=True)
