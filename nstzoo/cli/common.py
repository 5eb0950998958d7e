"""Shared pieces of the command line: consoles, JSON output, progress, device and image I/O."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..config import resolve_device  # noqa: F401 - re-exported for the command modules

# Messages and progress go to stderr so stdout stays machine-readable (--json, paths).
err_console = Console(stderr=True)
out_console = Console(highlight=False)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (plain print: rich would wrap long lines)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    err_console.print(message)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Any]:
    """A rich progress bar on a terminal; on CI or in logs (not a TTY) rich prints nothing live."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=err_console, transient=False,
                  disable=not err_console.is_terminal) as progress:
        task = progress.add_task(description, total=total, status="")

        class Handle:
            def advance(self, n: int = 1, status: str | None = None) -> None:
                progress.update(task, advance=n, **({"status": status} if status is not None else {}))

        yield Handle()
