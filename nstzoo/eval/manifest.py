"""The on-disk test-set format: a folder of images described by ``manifest.csv``.

Layout::

    my-testset/
      manifest.csv
      style/0000.png ...          (any layout: paths are read from the manifest)
      content/0000.jpg ...
      sanet/0000_0000.png ...

``manifest.csv`` is UTF-8 CSV with a header row naming (in any order) the columns::

    path,role,method,style_id,content_id

- ``path``: the image file, relative to the folder, with ``/`` separators; no absolute paths, no
  ``..``. Each path appears once.
- ``role``: ``stylized`` (the output of an NST method), ``style`` (a source style image) or
  ``content`` (an un-stylized content image).
- ``method``: the NST method (stylizer name) of a ``stylized`` row; empty for ``style`` and
  ``content`` rows, which are shared by every method of the test set.
- ``style_id``: the style of a ``stylized`` or ``style`` row; empty for ``content`` rows.
- ``content_id``: the content of a ``stylized`` or ``content`` row; empty for ``style`` rows.

Ids are free text (e.g. ``0042``) compared as strings. Every style id and content id used by a
stylized row must have exactly one ``style`` / ``content`` row (the IR-k targets), and a method
stylizes a (style, content) pair at most once. Extra columns are ignored. Example::

    path,role,method,style_id,content_id
    style/s0.png,style,,s0,
    content/c0.png,content,,,c0
    sanet/s0_c0.png,stylized,sanet,s0,c0

:func:`read_manifest` validates all of this and raises :class:`~nstzoo.errors.DataError` naming
the file, the line and the bad value; :func:`write_manifest` writes atomically;
:func:`manifest_arrays` gives the columns that :func:`nstzoo.eval.metrics.evaluate` takes.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from ..files import atomic_write

__all__ = ["MANIFEST_NAME", "COLUMNS", "ROLES", "ManifestRow", "read_manifest", "write_manifest", "manifest_arrays"]

MANIFEST_NAME = "manifest.csv"
COLUMNS = ("path", "role", "method", "style_id", "content_id")
ROLES = ("stylized", "style", "content")


@dataclass(frozen=True)
class ManifestRow:
    """One image of a test set. Empty fields are ``""``."""

    path: str
    role: str
    method: str = ""
    style_id: str = ""
    content_id: str = ""


def _row_problem(row: ManifestRow) -> str | None:
    """What is wrong with one row on its own, or None."""
    p = row.path
    if not p:
        return "empty path"
    if "\\" in p:
        return f"path {p!r} uses '\\'; use '/' separators"
    pp = PurePosixPath(p)
    if pp.is_absolute() or (len(p) > 1 and p[1] == ":"):
        return f"path {p!r} is absolute; paths are relative to the test-set folder"
    if ".." in pp.parts:
        return f"path {p!r} leaves the test-set folder ('..')"
    if row.role not in ROLES:
        return f"unknown role {row.role!r}; expected one of {', '.join(ROLES)}"
    want = {
        "stylized": ("method", "style_id", "content_id"),
        "style": ("style_id",),
        "content": ("content_id",),
    }[row.role]
    for field in ("method", "style_id", "content_id"):
        value = getattr(row, field)
        if field in want and not value.strip():
            return f"{row.role} row {p!r} has an empty {field}"
        if field not in want and value:
            return f"{row.role} row {p!r} must leave {field} empty, got {value!r}"
        if value != value.strip():
            return f"{field} {value!r} of {p!r} has leading or trailing spaces"
    return None


def _validate(rows: Sequence[ManifestRow], where: str, lines: Sequence[int] | None = None) -> None:
    """Check rows alone and together; ``where`` names the file, ``lines`` the line of each row."""

    def at(i: int) -> str:
        return f"{where}, line {lines[i]}" if lines is not None else f"{where}, row {i}"

    if not rows:
        raise DataError(f"{where}: the manifest has no rows")
    seen_path: dict[str, int] = {}
    sources: dict[tuple[str, str], int] = {}
    pairs: dict[tuple[str, str, str], int] = {}
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem:
            raise DataError(f"{at(i)}: {problem}")
        if row.path in seen_path:
            raise DataError(f"{at(i)}: duplicate path {row.path!r} (first at {at(seen_path[row.path])})")
        seen_path[row.path] = i
        if row.role == "stylized":
            key = (row.method, row.style_id, row.content_id)
            if key in pairs:
                raise DataError(
                    f"{at(i)}: method {row.method!r} stylizes style {row.style_id!r} with content "
                    f"{row.content_id!r} twice (first at {at(pairs[key])})"
                )
            pairs[key] = i
        else:
            key2 = (row.role, row.style_id if row.role == "style" else row.content_id)
            if key2 in sources:
                raise DataError(
                    f"{at(i)}: {row.role}_id {key2[1]!r} has a second {row.role} image (first at {at(sources[key2])})"
                )
            sources[key2] = i
    for i, row in enumerate(rows):
        if row.role != "stylized":
            continue
        for kind, value in (("style", row.style_id), ("content", row.content_id)):
            if (kind, value) not in sources:
                raise DataError(f"{at(i)}: {kind}_id {value!r} has no {kind} row (its source image)")
    if not pairs:
        raise DataError(f"{where}: the manifest has no stylized rows")


def read_manifest(folder: str | os.PathLike, *, check_files: bool = True) -> list[ManifestRow]:
    """Read and validate ``folder/manifest.csv``.

    Args:
        folder: the test-set folder.
        check_files: also require every listed image to exist under ``folder``.

    Returns:
        The rows in file order.

    Raises:
        DataError: no manifest, a missing column, a bad or duplicate value, a stylized row whose
            source image is not listed, or (``check_files``) a missing image; the message names the
            file and line.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"no {MANIFEST_NAME} in {folder}", hint="build a test set with `nstzoo testset build`")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate the BOM spreadsheet programs write
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}, line 1: missing column {missing[0]!r}; the header must name {','.join(COLUMNS)}")
    rows: list[ManifestRow] = []
    lines: list[int] = []
    for record in reader:
        line = reader.line_num
        if None in record:  # more fields than the header has
            n_fields = len(header) + len(record[None])
            raise DataError(f"{path}, line {line}: {n_fields} fields, the header has {len(header)}")
        if any(record[c] is None for c in COLUMNS):
            n_fields = sum(v is not None for v in record.values())
            raise DataError(f"{path}, line {line}: {n_fields} fields, the header has {len(header)}")
        if not any(record[c] for c in COLUMNS):
            continue  # a blank line
        rows.append(ManifestRow(*(record[c] for c in COLUMNS)))
        lines.append(line)
    _validate(rows, str(path), lines)
    if check_files:
        root = Path(folder)
        for row, line in zip(rows, lines):
            if not (root / row.path).is_file():
                raise DataError(f"{path}, line {line}: image {row.path!r} does not exist under {folder}")
    return rows


def write_manifest(folder: str | os.PathLike, rows: Iterable[ManifestRow]) -> Path:
    """Validate ``rows`` and write ``folder/manifest.csv`` atomically (temp file + rename).

    A reader never sees a half-written manifest, and a failed write leaves the old one in place.
    The images themselves are not checked (they may be written after the manifest).

    Returns:
        The manifest's path.

    Raises:
        DataError: the rows are not a valid test set (see :func:`read_manifest`).
    """
    rows = list(rows)
    folder = Path(folder)
    target = folder / MANIFEST_NAME
    _validate(rows, str(target))

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            for r in rows:
                writer.writerow((r.path, r.role, r.method, r.style_id, r.content_id))
            f.flush()
            os.fsync(f.fileno())

    atomic_write(target, write)
    return target


def manifest_arrays(rows: Sequence[ManifestRow]) -> dict[str, np.ndarray]:
    """The columns :func:`nstzoo.eval.metrics.evaluate` takes, one entry per row.

    Returns:
        ``{"role", "method", "style_id", "content_id"}`` -> ``[N]`` object arrays of str (``""``
        where empty), so ``evaluate(embeddings, **manifest_arrays(rows))`` with ``embeddings`` row
        ``i`` the embedding of ``rows[i].path``.
    """
    fields = ("role", "method", "style_id", "content_id")
    return {field: np.array([getattr(r, field) for r in rows], dtype=object) for field in fields}
