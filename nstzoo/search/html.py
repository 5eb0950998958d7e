"""A search result as one self-contained HTML page: opens from disk, no server, no network.

Every picture is embedded as a ``data:image/jpeg;base64`` URI of a small thumbnail (``thumb``
pixels on its longer side, about 5–10 kB each), so the page can be mailed or moved without the
image folders, and a browser never hits ``file://`` access rules. A file that can no longer be read
is shown as a labelled placeholder rather than a broken image. The markup lives in
``templates/results.html`` and is rendered by jinja2 with autoescaping on, so a file name with
``<`` or ``&`` in it cannot break (or inject into) the page.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from ..files import atomic_write
from .index import SearchResult

__all__ = ["thumbnail_data_uri", "render_html", "write_html"]


def thumbnail_data_uri(path: str | os.PathLike, thumb: int = 192, quality: int = 85) -> str | None:
    """A JPEG thumbnail of an image file as a ``data:`` URI (longer side ``thumb`` px), or None if unreadable."""
    from torchvision.io import encode_jpeg

    from ..data.folder import load_image

    try:
        image = load_image(path)
    except DataError:
        return None
    h, w = image.shape[1:]
    scale = min(1.0, thumb / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", antialias=True,
                                            align_corners=False)[0]
    data = encode_jpeg((small.clamp(0, 1) * 255).round().to(torch.uint8), quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(data.numpy().tobytes()).decode("ascii")


def render_html(result: SearchResult, *, thumb: int = 192, title: str | None = None) -> str:
    """The page for ``result``: a ``#query`` section (the query images) and a ``#results`` grid with scores."""
    import jinja2

    from .. import __version__

    env = jinja2.Environment(loader=jinja2.PackageLoader("nstzoo.search", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)

    def picture(path: str) -> dict[str, Any]:
        return {"path": path, "name": Path(path).name, "src": thumbnail_data_uri(path, thumb)}

    queries = [picture(q) for q in result.queries]
    hits = [{**picture(h.path), "rank": h.rank, "score": h.score} for h in result.hits]
    title = title or ("Style search: " + ", ".join(q["name"] for q in queries[:3]) + (" …" if len(queries) > 3 else ""))
    return env.get_template("results.html").render(result=result, queries=queries, hits=hits, thumb=thumb,
                                                   title=title, version=__version__)


def write_html(result: SearchResult, out: str | os.PathLike, *, thumb: int = 192) -> Path:
    """Render ``result`` to ``out`` (atomically); returns the path."""
    page = render_html(result, thumb=thumb)
    return atomic_write(out, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
