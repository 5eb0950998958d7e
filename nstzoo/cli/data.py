"""``nstzoo data generate|shard``: procedural images for offline runs and tests; tar shards for scale."""

from __future__ import annotations

from contextlib import ExitStack
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import info, print_json, progress_bar

app = typer.Typer(help="Data: procedural images; tar shards for millions of images.", no_args_is_help=True)


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


@app.command("shard")
def shard(
    folders: Annotated[list[Path], typer.Argument(help="Image folders, sharded folder after folder in sorted order.",
                                                  show_default=False)],
    out: Annotated[Path, typer.Option(help="Shard folder: shard-000000.tar ... and shards.json (written last).")],
    shard_size: Annotated[int, typer.Option(min=1, help="Images per shard (small shards keep random reads cheap).")]
    = 1000,
    overwrite: Annotated[bool, typer.Option(help="Start afresh in an --out that holds other shards or other files.")]
    = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Pack image folders into tar shards (webdataset layout) read by global index; resumable.

    Each image keeps its original bytes; its key is its global index, the index it has in the
    folders, so training from the shards draws the same images as training from the folders.
    Rerun the same command after an interruption to continue where it stopped.
    """
    from ..data.shards import write_shards

    bars: list[Any] = []
    with ExitStack() as stack:
        def listed(total: int, done: int) -> None:
            # The bar starts once the folders are listed: only then is the total known.
            bars.append(stack.enter_context(progress_bar("sharding images", total)))
            bars[0].advance(done, status=f"resumed at {done}" if 0 < done < total else "")

        summary = write_shards(folders, out, shard_size, overwrite=overwrite, progress=lambda n: bars[0].advance(n),
                               on_listed=listed)
    if json_output:
        print_json(summary.as_dict())
        return
    if summary.already_complete:
        info(f"[green]{summary.images} images[/] already in {summary.shards} shards in {out} (nothing to do)")
    else:
        resumed = f", resumed at image {summary.resumed_from}" if summary.resumed_from else ""
        info(f"[green]{summary.written_images} images[/] written in {summary.written_shards} shards "
             f"({summary.images} images, {summary.shards} shards, {summary.bytes / 1e6:.1f} MB in {out}{resumed})")
    if summary.unreadable:
        info(f"[yellow]{len(summary.unreadable)} unreadable files[/] kept as empty samples, skipped when read: "
             + ", ".join(summary.unreadable[:3]) + (", ..." if len(summary.unreadable) > 3 else ""))
    skipped = sum(summary.listing_skipped.values())
    if skipped:
        info(f"[yellow]{skipped} files left out while listing[/]: "
             + ", ".join(f"{n} {reason}" for reason, n in summary.listing_skipped.items()))
