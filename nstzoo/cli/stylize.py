"""``nstzoo stylize``: contents x styles x stylizers -> images (or videos), batched on the device.

One pair: ``nstzoo stylize -s sanet --content c.jpg --style s.jpg -o out.png`` (an existing OUT is
refused unless ``--overwrite``; an input is never overwritten). Many: ``--content`` and ``--style``
take files, folders, ``.txt`` lists and globs, each repeatable; every pair goes to
``--out DIR/{content}__{style}__{stylizer}.png`` (existing files skipped unless ``--overwrite``).
The work itself is :mod:`nstzoo.stylize`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from ..errors import ConfigError, DataError
from ..outputs import check_output_file, check_output_folder
from .common import info, print_json, progress_bar, resolve_device

IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")


def _names(values: list[str]) -> list[str]:
    """``-s sanet,pama -s ghiasi`` -> ``["sanet", "pama", "ghiasi"]`` (order kept, duplicates dropped)."""
    names = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not names:
        raise ConfigError("--stylizer: give at least one name (see `nstzoo stylizers list`)")
    return list(dict.fromkeys(names))


def stylize(
    stylizer: Annotated[list[str], typer.Option(
        "--stylizer", "-s", metavar="NAMES", help="Stylizer name(s): -s sanet,pama,ghiasi or repeated (see nstzoo stylizers list).")],
    content: Annotated[list[str], typer.Option(
        metavar="PATH", help="Content image, video (.mp4 ...), folder, .txt list or glob; repeatable.")],
    style: Annotated[list[str], typer.Option(
        metavar="PATH", help="Style image, folder, .txt list or glob; repeatable. With --style-weights: the styles to mix.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="One pair only: write the result exactly here (.png/.jpg; .mp4 for a video).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Folder for {content}__{style}__{stylizer}.png (created if needed).")] = None,
    pairs: Annotated[str, typer.Option(
        help="product: every content with every style; zip: the i-th content with the i-th style.")] = "product",
    size: Annotated[int | None, typer.Option(
        help="Resize both images' shorter side to this many pixels first; 0 keeps each image's own size "
             "(the output then has the content's size).")] = 512,
    style_size: Annotated[int | None, typer.Option(help="Style image's shorter side (default: --size).")] = None,
    alpha: Annotated[float, typer.Option(
        help="Content-style strength in [0, 1]: 1 = full stylization, 0 = the content (or the method's "
             "reconstruction of it). Only for stylizers that declare it (nstzoo stylizers show NAME).")] = 1.0,
    style_weights: Annotated[str | None, typer.Option(
        help="Interpolate the --style images with these weights, e.g. 0.7,0.3 (normalised to sum 1).")] = None,
    preserve_color: Annotated[bool, typer.Option(
        help="Keep the content's colours: only the stylized luminance is used (any stylizer).")] = False,
    max_memory: Annotated[str, typer.Option(
        help="Peak memory budget, e.g. 4GiB: larger images are stylized at full resolution in overlapped, "
             "blended tiles.")] = "4GiB",
    tile: Annotated[int | None, typer.Option(
        min=32, help="Fixed tile side in pixels (default: from --max-memory).")] = None,
    overlap: Annotated[int, typer.Option(min=0, help="Pixels shared by neighbouring tiles (blending ramp).")] = 64,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs (or video frames) per call at most.")] = 8,
    grid: Annotated[bool, typer.Option(
        help="Also write grid__{stylizer}.png contact sheets (contents x styles).")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    weights: Annotated[Path | None, typer.Option(
        help="A safetensors file to use instead of the store's (one stylizer only).")] = None,
    random_init: Annotated[bool, typer.Option(help="Run with random weights if none are found (pipeline tests).")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON record on stdout.")] = False,
    overwrite: Annotated[bool, typer.Option(
        help="Replace existing outputs (never an input file).")] = False,
) -> None:
    """Stylize contents with styles: one pair (-o) or every pair into a folder (--out), with one or more stylizers."""
    from ..registry import get_registry
    from ..stylize import (ControlError, Controls, Stylizer, StylizeJob, check_controls, parse_memory,
                           parse_style_weights, resolve_inputs, run_job)
    from ..stylize.video import is_video
    from ..weights import load_stylizer

    names = _names(stylizer)
    registry = get_registry()
    specs = {name: registry.stylizer(name) for name in names}  # unknown names: exit 2 before any work
    if output is not None and out is not None:
        raise ConfigError("give either -o/--output FILE (one pair) or --out DIR, not both")
    if output is None and out is None:
        raise ConfigError("where should results go? give --out DIR (or -o FILE for a single pair)")
    if weights is not None and len(names) > 1:
        raise ConfigError(f"--weights is for one stylizer, got {len(names)}: {', '.join(names)}")
    if (size is not None and size < 0) or (style_size is not None and style_size < 0):
        raise ConfigError("--size and --style-size must be >= 0 (0 keeps an image's own size)")
    budget = parse_memory(max_memory)

    content_files, skipped_contents = resolve_inputs(content, "--content", allow_video=True)
    style_files, skipped_styles = resolve_inputs(style, "--style")
    weights_tuple = None
    if style_weights is not None:
        if len(style_files) < 2:
            raise ControlError(f"--style-weights needs at least two --style images, got {len(style_files)}")
        weights_tuple = parse_style_weights(style_weights, len(style_files))
        if pairs == "zip":
            raise ConfigError("--pairs zip and --style-weights do not go together: the weights mix all styles")
    controls = Controls(alpha=alpha, style_weights=weights_tuple, preserve_color=preserve_color)
    for name, spec in specs.items():  # every stylizer, before any of them runs
        check_controls(name, spec.controls, controls)

    single = output is not None
    styles_per_content = 1 if weights_tuple or pairs != "product" else len(style_files)
    pair_count = len(content_files) * styles_per_content
    if single:
        if len(names) != 1 or pair_count != 1 or (pairs == "zip" and len(content_files) != len(style_files)):
            raise ConfigError("-o/--output writes one result: give one stylizer, one content and one style "
                              "(or --style-weights), or use --out DIR")
        video = is_video(content_files[0])
        suffixes = (".mp4",) if video else IMAGE_OUTPUT_SUFFIXES
        # Before any work: an existing result is kept unless --overwrite, an input never replaced.
        check_output_file(output, overwrite=overwrite, suffixes=suffixes,
                          inputs=[("--content", content_files[0]), ("--weights", weights)]
                          + [("--style", s) for s in style_files])
    else:
        check_output_folder(out, option="--out")

    dev = resolve_device(device)

    def load(name: str) -> Stylizer:
        module = load_stylizer(name, device=dev, weights=weights, random_init=random_init)
        return Stylizer(name, module, specs[name].controls, plugin=registry.stylizer_plugin(name),
                        max_memory=budget, tile=tile, overlap=overlap)

    job = StylizeJob(stylizers=names, contents=content_files, styles=style_files, out_dir=out, pairs=pairs,
                     controls=controls, size=size or 0, style_size=style_size if style_size else (size or 0),
                     batch_size=batch_size, overwrite=overwrite or single, grid=grid and not single,
                     single_output=output)
    start = time.perf_counter()
    with torch.inference_mode(), progress_bar("stylize", pair_count * len(names)) as bar:
        summary = run_job(job, load, device=dev, skipped_inputs=skipped_contents + skipped_styles,
                          progress=lambda name, n: bar.advance(n, status=name))
    seconds = time.perf_counter() - start

    if single:
        if not summary.written:
            # One pair that could not be read is an error naming the file, not a quiet skip.
            path, reason = next(iter(summary.unreadable.items()), (str(content_files[0]), "nothing written"))
            raise DataError(reason if path in reason else f"{path}: {reason}")
        written = summary.written[0]
        record = {"stylizer": names[0], "content": str(content_files[0]),
                  "style": str(style_files[0]) if len(style_files) == 1 else [str(s) for s in style_files],
                  "output": str(output), "size": written.get("size", [written.get("height"), written.get("width")]),
                  "seconds": round(seconds, 4), "device": str(dev)}
        if json_output:
            print_json(record)
        else:
            h, w = record["size"]
            info(f"[green]wrote[/] {output} ({w}x{h}, {names[0]}, {seconds:.2f}s on {dev})")
        return

    record = {"stylizers": names, "device": str(dev), "out": str(out), **summary.as_dict(),
              "total_seconds": round(seconds, 3)}
    if json_output:
        print_json(record)
    else:
        info(f"[green]wrote[/] {len(summary.written)} file(s) to {out}, skipped {len(summary.skipped_existing)} "
             f"existing, {len(summary.unreadable)} unreadable input(s), {seconds:.1f}s on {dev}")
        for grid_path in summary.grids:
            info(f"[green]grid[/] {grid_path}")
    for path, reason in list(summary.unreadable.items())[:5]:
        info(f"[yellow]skipped[/] {reason if path in reason else f'{path}: {reason}'}")
