"""``nstzoo stylize``: one content image + one style image -> one stylized image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from ..contract import checked_stylize
from ..weights import load_stylizer
from ..data.folder import save_image
from ..outputs import check_output_file, write_error
from .common import info, print_json, resolve_device


def stylize(
    stylizer: Annotated[str, typer.Option("--stylizer", "-s", help="Stylizer name (nstzoo stylizers list).")],
    content: Annotated[Path, typer.Option(help="Content image.")],
    style: Annotated[Path, typer.Option(help="Style image.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the result (.png or .jpg).")],
    size: Annotated[int | None, typer.Option(
        help="Resize both images' shorter side to this many pixels first; 0 keeps each image's own size "
             "(the output then has the content's size).")] = 512,
    style_size: Annotated[int | None, typer.Option(help="Style image's shorter side (default: --size).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    weights: Annotated[Path | None, typer.Option(help="A safetensors file to use instead of the store's.")] = None,
    random_init: Annotated[bool, typer.Option(help="Run with random weights if none are found (pipeline tests).")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON record on stdout.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists (never when it is an input).")] = False,
) -> None:
    """Stylize one content image with one style image."""
    from ..data.folder import load_image
    from ..data.transforms import resize_shorter

    # Before any work: an existing result is kept unless --overwrite, an input never replaced.
    check_output_file(output, overwrite=overwrite, suffixes=(".png", ".jpg", ".jpeg"),
                 inputs=(("--content", content), ("--style", style), ("--weights", weights)))
    dev = resolve_device(device)
    model = load_stylizer(stylizer, device=dev, weights=weights, random_init=random_init)
    content_image = load_image(content)
    style_image = load_image(style)
    if size:
        content_image = resize_shorter(content_image, size)
    if style_size or size:
        style_image = resize_shorter(style_image, style_size or size)
    start = time.perf_counter()
    with torch.inference_mode():
        # Checked and clamped: a broken stylizer is reported by name instead of saving a garbage image.
        result = checked_stylize(stylizer, model, content_image[None].to(dev), style_image[None].to(dev))[0]
    seconds = time.perf_counter() - start
    try:
        save_image(result, output)
    except OSError as err:
        raise write_error(output, err) from None
    record = {"stylizer": stylizer, "content": str(content), "style": str(style), "output": str(output),
              "size": list(result.shape[-2:]), "seconds": round(seconds, 4), "device": str(dev)}
    if json_output:
        print_json(record)
    else:
        info(f"[green]wrote[/] {output} ({result.shape[-1]}x{result.shape[-2]}, {stylizer}, {seconds:.2f}s on {dev})")
