"""Style search commands: ``nstzoo index build|add`` and ``nstzoo search``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import err_console, info, print_json, progress_bar, resolve_device

index_app = typer.Typer(help="Faiss indexes of image folders embedded with a style encoder.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
Device = Annotated[str, typer.Option(help="Where the encoder runs: auto, cpu, cuda, cuda:1 ...")]
BatchSize = Annotated[int, typer.Option(help="Images per forward pass.")]
Workers = Annotated[int, typer.Option(help="DataLoader processes decoding images.")]
CheckpointEvery = Annotated[int, typer.Option(help="Images per commit; a killed build loses at most this many.")]


def _report(report: Any, json_output: bool, verb: str, index: Path) -> None:
    data = {"index": str(index), **report.as_dict()}
    if json_output:
        print_json(data)
        return
    skipped = sum(report.skipped.values())
    info(f"[green]{verb}[/] {index}: {report.added} added, {report.present} already indexed, {skipped} skipped"
         + (f" ({', '.join(f'{n} {why}' for why, n in sorted(report.skipped.items()))})" if skipped else "")
         + f"; {report.count} images, {report.plan['kind']} index ({report.seconds:.1f} s)")
    for f in report.skipped_files[:5]:
        err_console.print(f"  skipped {f['path']}: {f['message']}", highlight=False, soft_wrap=True)


@index_app.command("build")
def build(
    weights: Annotated[Path, typer.Option(help="Exported encoder (.safetensors) or a run folder.")],
    input: Annotated[list[Path], typer.Option("--input", "-i", help="Image folder(s) or file(s) (repeatable).")],
    out: Annotated[Path, typer.Option(help="INDEX folder to create; run again to resume it.")],
    kind: Annotated[str, typer.Option(help="auto (flat up to 100k images, else IVF-PQ + rerank), flat, ivfpq, hnsw.")] = "auto",
    device: Device = "auto",
    batch_size: BatchSize = 32,
    workers: Workers = 2,
    checkpoint_every: CheckpointEvery = 1024,
    json_output: JsonFlag = False,
) -> None:
    """Embed every image under --input and write a faiss index + sidecar to --out (resumable)."""
    from ..search import StyleIndex

    with progress_bar("indexing", None) as bar:
        index = StyleIndex.build(weights, input, out, kind=kind, device=resolve_device(device), batch_size=batch_size,
                                 workers=workers, checkpoint_every=checkpoint_every, progress=lambda n: bar.advance(n),
                                 log=info)
    _report(index.last_report, json_output, "built", out)


@index_app.command("add")
def add(
    index: Annotated[Path, typer.Option(help="An INDEX folder made by `nstzoo index build`.")],
    input: Annotated[list[Path] | None, typer.Option("--input", "-i", help="Image folder(s) or file(s); none: finish an interrupted build.")] = None,
    weights: Annotated[Path | None, typer.Option(help="The index's encoder, if it has moved (checked by digest).")] = None,
    device: Device = "auto",
    batch_size: BatchSize = 32,
    workers: Workers = 2,
    checkpoint_every: CheckpointEvery = 1024,
    json_output: JsonFlag = False,
) -> None:
    """Add the images under --input that the index does not hold yet."""
    from ..search import StyleIndex

    style_index = StyleIndex.open(index)
    with progress_bar("indexing", None) as bar:
        report = style_index.add(input or [], weights=weights, device=resolve_device(device), batch_size=batch_size,
                                 workers=workers, checkpoint_every=checkpoint_every, progress=lambda n: bar.advance(n),
                                 log=info)
    _report(report, json_output, "updated", index)


def search(
    index: Annotated[Path, typer.Option(help="An INDEX folder made by `nstzoo index build`.")],
    query: Annotated[list[Path], typer.Option("--query", "-q", help="Query image (repeat for a moodboard).")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many results.")] = 25,
    weights: Annotated[Path | None, typer.Option(help="Encoder to embed the queries with (default: the index's; another is refused).")] = None,
    device: Device = "auto",
    exclude_same_file: Annotated[bool, typer.Option(help="Leave the query files themselves out of the results.")] = False,
    html: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML page of the results.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """The indexed images nearest in style to the query image(s); several images form a moodboard."""
    from ..search import StyleIndex
    from ..search.html import write_html

    style_index = StyleIndex.open(index)
    result = style_index.search([str(q) for q in query], k=k, exclude_same_file=exclude_same_file,
                                weights=weights, device=resolve_device(device))
    if html is not None:
        write_html(result, html)
        info(f"[green]wrote[/] {html}")
    if result.pending:
        info(f"note: {result.pending} committed images are not searchable yet; finish with "
             f"`nstzoo index add --index {index}`")
    if json_output:
        print_json({**result.as_dict(), **({"html": str(html)} if html else {})})
        return
    # plain lines, not a rich table: a table would cut long paths at the terminal width
    title = ("moodboard of " if result.moodboard else "") + ", ".join(Path(q).name for q in result.queries)
    info(f"[bold]{title}[/]: top {len(result.hits)} of {result.count} ({result.kind} index)")
    for hit in result.hits:
        sys.stdout.write(f"{hit.rank:>4}  {hit.score:.3f}  {hit.path}\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    app.command("search")(search)


__all__ = ["register"]
