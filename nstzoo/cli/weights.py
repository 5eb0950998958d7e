"""``nstzoo weights list|import|verify``: the weights store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .. import weights as store
from ..errors import WeightsError
from ..outputs import OutputError, check_output_file
from ..registry import get_registry
from .common import info, out_console, print_json

app = typer.Typer(help="The weights store ($NSTZOO_HOME/weights): list, import official files, verify.",
                  no_args_is_help=True)


@app.command("list")
def list_weights(json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """List stored weight files with their source checkpoints."""
    rows = store.stored_weights()
    if json_output:
        print_json({"weights_dir": str(store.weights_dir()), "files": rows})
        return
    info(f"weights store: {store.weights_dir()}")
    table = Table("name", "kind", "MiB", "created", "sources")
    for r in rows:
        sources = ", ".join(f"{s['file']} ({s['sha256'][:12]})" for s in r["sources"])
        table.add_row(r["name"], str(r["kind"]), f"{r['bytes'] / 2**20:.1f}", str(r["created"]),
                      r.get("error") or sources)
    out_console.print(table)


@app.command("import")
def import_weights(
    name: Annotated[str, typer.Argument(help="Stylizer whose official checkpoint files these are.")],
    files: Annotated[list[Path] | None, typer.Argument(help="The official files (.pth, .onnx ...), any order.")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Write here instead of the store.")] = None,
    force: Annotated[bool, typer.Option(help="Replace weights already in the store (or at --out).")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Convert the authors' original checkpoint files to one safetensors file (strictly mapped)."""
    spec = get_registry().stylizer(name)
    paths = list(files or [])
    if not paths and spec.locate_official is not None:
        paths = store.locate_official(spec)  # plugin code: a failure there is reported naming the plugin
        if paths:
            info(f"found the official files installed: {', '.join(str(p) for p in paths)}")
    if not paths:
        raise WeightsError(f"no files given for {name!r}",
                           hint=f"nstzoo weights import {name} {' '.join(spec.weight_files) or 'FILE...'}")
    target = out if out is not None else store.weights_path(name)
    if out is None and target.exists() and not force:
        raise OutputError(f"weights for {name!r} are already in the store ({target}); not replacing them",
                          hint="pass --force to replace them, or -o FILE to write elsewhere")
    # Checked before the conversion; an input is never overwritten, even with --force.
    check_output_file(target, overwrite=force, option="--out" if out is not None else "store file", overwrite_flag="--force",
                 inputs=[("input", p) for p in paths])
    try:
        target = store.import_official(spec, paths, out=out)
    except OSError as err:  # reading an input or writing the target: name whichever file it was
        raise OutputError(f"cannot import {name!r}: {err.filename or target}: "
                          f"{(err.strerror or str(err)).lower()}") from None
    meta = store.read_metadata(target)
    if json_output:
        print_json({"name": name, "path": str(target), "sources": meta.get("sources", [])})
    else:
        info(f"[green]imported {name}[/] -> {target}")


@app.command("verify")
def verify(
    names: Annotated[list[str] | None, typer.Argument(help="Names to check (default: every stored file).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Check stored files: header, tensor digest, finite values, and a strict load into the architecture."""
    registry = get_registry()
    entries = store.stored_weights()
    if names:
        entries = [e for e in entries if e["name"] in names]
        missing = sorted(set(names) - {e["name"] for e in entries})
        if missing:
            raise WeightsError(f"no stored weights for: {', '.join(missing)}", hint="nstzoo weights list")
    results = []
    for entry in entries:
        problems = store.verify_file(entry["path"])
        if not problems and entry["kind"] == "stylizer":
            try:
                store.load_stylizer(entry["name"], weights=entry["path"], registry=registry)
            except Exception as exc:  # noqa: BLE001 - report every failure, keep checking the others
                problems.append(str(exc))
        results.append({"name": entry["name"], "path": entry["path"], "ok": not problems, "problems": problems})
    if json_output:
        print_json(results)
    else:
        for r in results:
            mark = "[green]ok[/]" if r["ok"] else "[red]FAILED[/]"
            out_console.print(f"{mark} {r['name']} ({r['path']})")
            for p in r["problems"]:
                out_console.print(f"    {p}")
    if any(not r["ok"] for r in results):
        raise typer.Exit(1)
