"""``nstzoo data generate``: deterministic procedural images for offline runs and tests."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .common import info, print_json, progress_bar

app = typer.Typer(help="Data: procedural images.", no_args_is_help=True)


class Kind(str, Enum):
    content = "content"
    style = "style"


@app.command("generate")
def generate(
    kind: Annotated[Kind, typer.Option(help="content (scenes: layouts and shapes) or style (textures with palettes).")],
    count: Annotated[int, typer.Option(min=1, help="Number of images.")],
    out: Annotated[Path, typer.Option(help="Output folder (existing images of the right size are kept: resumable).")],
    size: Annotated[int, typer.Option(min=16, help="Side length in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives byte-identical files.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the written paths as JSON.")] = False,
) -> None:
    """Generate procedural content or style images."""
    from ..data.generate import generate_folder

    with progress_bar(f"generating {kind.value} images", count) as bar:
        paths = generate_folder(kind.value, count, size, seed, out, progress=lambda n=1: bar.advance(n))
    if json_output:
        print_json({"kind": kind.value, "count": len(paths), "out": str(out), "paths": [str(p) for p in paths]})
    else:
        info(f"[green]{len(paths)} {kind.value} images[/] in {out}")
