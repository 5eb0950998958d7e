"""Contact sheets: contents down, styles across, one stylizer per sheet, labelled."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..files import atomic_write

__all__ = ["contact_sheet"]

LABEL_HEIGHT = 18
PAD = 4


def _thumb(path: Path | None, cell: int):
    from PIL import Image, ImageOps

    if path is None:
        return None
    try:
        from ..data.folder import load_image

        tensor = load_image(path)
    except Exception:  # noqa: BLE001 - a missing or broken output leaves its cell empty, not the sheet
        return None
    array = (tensor.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return ImageOps.contain(Image.fromarray(array), (cell, cell))


def contact_sheet(target: str | os.PathLike[str], contents: Sequence[tuple[str, Path]],
                  styles: Sequence[tuple[str, Path]], results: Mapping[tuple[str, str], Path],
                  title: str, cell: int = 192) -> Path:
    """Write a labelled grid: a header row of style thumbnails, a first column of content thumbnails,
    and the result of content ``i`` with style ``j`` in cell ``(i, j)``.

    Args:
        target: the PNG to write (atomically).
        contents: ``(label, image path)`` per row.
        styles: ``(label, image path)`` per column.
        results: ``(content label, style label) -> stylized image``; missing pairs stay blank.
        title: drawn in the top-left corner (the stylizer's name).
        cell: thumbnail box side in pixels.
    """
    from PIL import Image, ImageDraw

    step = cell + LABEL_HEIGHT + PAD
    width = (len(styles) + 1) * (cell + PAD) + PAD
    height = (len(contents) + 1) * step + PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)

    def put(image, col: int, row: int, label: str) -> None:
        x, y = PAD + col * (cell + PAD), PAD + row * step
        if image is not None:
            sheet.paste(image, (x + (cell - image.width) // 2, y + (cell - image.height) // 2))
        text = label if len(label) <= cell // 7 else label[: cell // 7 - 1] + "…"
        draw.text((x + 2, y + cell + 3), text, fill=(0, 0, 0))

    draw.text((PAD + 4, PAD + 4), title, fill=(0, 0, 0))
    for j, (label, path) in enumerate(styles, start=1):
        put(_thumb(path, cell), j, 0, f"style: {label}")
    for i, (content_label, path) in enumerate(contents, start=1):
        put(_thumb(path, cell), 0, i, f"content: {content_label}")
        for j, (style_label, _) in enumerate(styles, start=1):
            put(_thumb(results.get((content_label, style_label)), cell), j, i, "")
    return atomic_write(target, lambda tmp: sheet.save(tmp, format="PNG"))
