"""Build a synthetic test set on disk: S styles x C contents, stylized by each method.

Every selected content is stylized with every selected style by every method (the paper: 400 x 100
per method), written as PNG with a ``manifest.csv`` in the public format of
:mod:`nstzoo.eval.manifest`, plus the source style and content images (the IR-k targets)::

    OUT/manifest.csv
    OUT/style/s0000.png ...           OUT/content/c0000.png ...
    OUT/<method>/s0000_c0000.png ...

Deterministic: images are chosen by a seeded draw from the sorted folder listing and centre-cropped.
Resumable: an image already on disk is not made again (files are written atomically, so an
interrupted build leaves no partial image); the manifest is written last. ``build.json`` records
what the images were made from (sources, size, seed) so that a resumed build with other settings,
whose files would share names with stale images, is refused instead of mixing the two. Arguments
are checked before ``build.json`` is written, and a ``build.json`` next to no image yet (a build
that failed before its first image) is replaced, so a corrected rerun is never refused.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..contract import checked_stylize
from ..errors import DataError
from ..weights import load_stylizer
from .manifest import ManifestRow, write_manifest


def _choose(paths: list[Path], count: int | None, seed: int, what: str) -> list[Path]:
    if count is None:
        return paths
    if count > len(paths):
        raise DataError(f"asked for {count} {what} images but only {len(paths)} readable ones were found",
                        hint=f"lower --{what}s or add images")
    return sorted(random.Random(seed).sample(paths, count))


def _check_arguments(stylizers: Sequence[str], size: int, batch_size: int, n_styles: int | None,
                     n_contents: int | None) -> None:
    """Refuse impossible settings before anything is read or written."""
    from ..data.decode import pixel_limit

    if not stylizers:
        raise DataError("no stylizers given", hint="e.g. --stylizers reinhard,adain")
    if size < 1:
        raise DataError(f"--size must be at least 1 pixel, got {size}")
    if size * size > pixel_limit():
        raise DataError(f"--size {size}: {size} x {size} images exceed the pixel limit of {pixel_limit():,}",
                        hint="lower --size, or raise NSTZOO_MAX_PIXELS")
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    for option, count in (("--styles", n_styles), ("--contents", n_contents)):
        if count is not None and count < 1:
            raise DataError(f"{option} must be at least 1, got {count}")


def _has_images(out: Path) -> bool:
    return any(p.is_file() for p in out.rglob("*.png"))


def _check_or_record_build(out: Path, params: dict[str, Any]) -> None:
    from ..weights import atomic_write

    record = out / "build.json"
    if record.is_file():
        try:
            previous = json.loads(record.read_text())
            if not isinstance(previous, dict):
                raise ValueError(f"expected a JSON object, found {type(previous).__name__}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{record} is corrupt ({exc}); it records what the images in {out} were built from",
                            hint=f"choose another --out or delete {out}; or, if its images were made with these "
                                 f"same settings, delete {record} alone and rerun (they are then reused)") from None
        changed = [k for k in params if previous.get(k) != params[k]]
        if not changed:
            return
        if _has_images(out):
            raise DataError(f"{out} holds a test set built with other {', '.join(changed)}; resuming would mix "
                            "images made from different sources", hint="choose another --out, or delete that folder")
        # A build that stopped before its first image: nothing to mix, record the new settings.
    atomic_write(record, lambda tmp: Path(tmp).write_text(json.dumps(params, indent=1)))


def _readable(folder: str | Path, what: str) -> tuple[list[Path], list[tuple[Path, str]]]:
    from ..data.folder import list_images, scan

    ok, bad = scan(list_images(folder))
    if not ok:
        raise DataError(f"no readable {what} images in {folder}")
    return ok, bad


def build_testset(stylizers: Sequence[str], content_dir: str | Path, style_dir: str | Path, out: str | Path, *,
                  n_styles: int | None = None, n_contents: int | None = None, size: int = 512, seed: int = 0,
                  device: str | torch.device = "cpu", random_init: bool = False, batch_size: int = 8,
                  progress: Callable[[int], None] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Stylize every chosen content with every chosen style by each stylizer; returns a summary.

    ``progress(n)`` is called after every ``n`` images written or found on disk.
    """
    from ..data.folder import load_image, save_image
    from ..data.transforms import resize_crop
    from ..outputs import check_output_folder, write_error

    _check_arguments(stylizers, size, batch_size, n_styles, n_contents)
    out = check_output_folder(out)

    def save(image: torch.Tensor, target: Path) -> None:
        try:
            save_image(image, target)
        except OSError as err:  # disk full, permissions changed mid-build: one line, not a traceback
            raise write_error(target, err, option="--out") from None

    styles_ok, styles_bad = _readable(style_dir, "style")
    contents_ok, contents_bad = _readable(content_dir, "content")
    for path, reason in styles_bad + contents_bad:
        log(f"skipped unreadable image {path}: {reason}")
    styles = _choose(styles_ok, n_styles, seed, "style")
    contents = _choose(contents_ok, n_contents, seed + 1, "content")
    _check_or_record_build(out, {"size": size, "styles": [str(p) for p in styles],
                                 "contents": [str(p) for p in contents]})
    style_ids = [f"s{i:04d}" for i in range(len(styles))]
    content_ids = [f"c{i:04d}" for i in range(len(contents))]

    def prepared(path: Path) -> torch.Tensor:
        return resize_crop(load_image(path), size, random=False)

    rows: list[ManifestRow] = []
    style_tensors, content_tensors = [], []
    for kind, ids, paths, tensors in (("style", style_ids, styles, style_tensors),
                                      ("content", content_ids, contents, content_tensors)):
        for item_id, path in zip(ids, paths):
            target = out / kind / f"{item_id}.png"
            image = prepared(path)
            if not target.exists():
                save(image, target)
            tensors.append(image)
            rows.append(ManifestRow(path=f"{kind}/{item_id}.png", role=kind, method="",
                                    style_id=item_id if kind == "style" else "",
                                    content_id=item_id if kind == "content" else ""))
    content_stack = torch.stack(content_tensors)
    made = reused = 0
    for name in stylizers:
        model = load_stylizer(name, device=device, random_init=random_init)
        for s_index, style_id in enumerate(style_ids):
            targets = [out / name / f"{style_id}_{cid}.png" for cid in content_ids]
            todo = [i for i, t in enumerate(targets) if not t.exists()]
            reused += len(targets) - len(todo)
            if progress and len(targets) > len(todo):
                progress(len(targets) - len(todo))
            for start in range(0, len(todo), batch_size):
                index = todo[start:start + batch_size]
                content = content_stack[index].to(device)
                style = style_tensors[s_index][None].expand(len(index), -1, -1, -1).to(device)
                with torch.inference_mode():
                    # Checked and clamped: a broken stylizer stops the build naming itself, instead of
                    # writing NaN-black or clipped images into a test set that looks fine.
                    result = checked_stylize(name, model, content, style).float().cpu()
                for i, image in zip(index, result):
                    save(image, targets[i])
                made += len(index)
                if progress:
                    progress(len(index))
            rows.extend(ManifestRow(path=f"{name}/{style_id}_{cid}.png", role="stylized", method=name,
                                    style_id=style_id, content_id=cid) for cid in content_ids)
    write_manifest(out, rows)
    return {"out": str(out), "methods": list(stylizers), "styles": len(styles), "contents": len(contents),
            "stylized": len(stylizers) * len(styles) * len(contents), "made": made, "reused": reused,
            "skipped_unreadable": len(styles_bad) + len(contents_bad)}
