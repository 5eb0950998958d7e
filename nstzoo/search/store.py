"""The on-disk side of a style index: image records, stored vectors, the commit protocol.

An INDEX folder holds::

    index.json       header: encoder identity (name, config, weights digest, dim), requested kind,
                     and the faiss plan + vector count of index.faiss (rewritten atomically)
    items.sqlite     one row per indexed image (id = faiss id = row of vectors.f16) and one row
                     per skipped file with its reason
    vectors.f16      the embeddings, float16 ``[N, D]`` rows appended in id order
    index.faiss      the faiss index over vectors.f16 (rewritten atomically; derived data)

**Why SQLite for the sidecar, not JSON lines.** A million-image index needs, per query, the paths of
25 ids, and per build batch, "which of these paths are indexed already": SQLite answers both
through its primary key and a unique index without loading millions of paths into memory, where
JSON lines would be read whole (or need a hand-made offset index). Its transactions are the
checkpoint: a batch's rows become visible all at once or not at all, also under SIGKILL. It is in
the standard library, and a user can inspect an index with the ``sqlite3`` shell.

**Commit protocol.** A batch appends its vectors to ``vectors.f16`` and fsyncs them, *then*
commits its rows in one transaction. The row count is the truth: on open, bytes of
``vectors.f16`` past ``count × row size`` (a batch killed before its commit) are cut off, so a
killed build resumes without duplicates or orphans. ``index.faiss`` is rebuilt or extended from
``vectors.f16`` afterwards and written with :func:`nstzoo.files.atomic_write`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..files import atomic_write

HEADER = "index.json"
ITEMS = "items.sqlite"
VECTORS = "vectors.f16"
FAISS = "index.faiss"
LOCK = ".lock"
FORMAT = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,          -- faiss id and row of vectors.f16
    path TEXT NOT NULL UNIQUE,       -- absolute path as given (symlinks kept, so it reads as the user wrote it)
    realpath TEXT NOT NULL,          -- symlinks resolved: --exclude-same-file compares these
    bytes INTEGER NOT NULL,
    mtime REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_realpath ON items(realpath);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,            -- unreadable | empty | unsupported | too large | corrupt
    message TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Item:
    """One indexed image."""

    id: int
    path: str
    realpath: str
    bytes: int
    mtime: float
    width: int
    height: int


@dataclass(frozen=True)
class NewItem:
    """An image embedded in this batch, before it has an id."""

    path: str
    bytes: int
    mtime: float
    width: int
    height: int


class Store:
    """Records and vectors of one INDEX folder (see the module docstring).

    Args:
        root: the INDEX folder (must exist).
        dim: embedding dimension (row size of ``vectors.f16``).
    """

    def __init__(self, root: Path, dim: int):
        self.root, self.dim = Path(root), int(dim)
        self.db = sqlite3.connect(self.root / ITEMS, isolation_level=None)  # explicit BEGIN/COMMIT below
        self.db.executescript(_SCHEMA)
        self._repair()

    # ------------------------------------------------------------------ reading

    @property
    def row_bytes(self) -> int:
        return 2 * self.dim

    def count(self) -> int:
        """Committed images (ids are ``0 .. count-1``)."""
        return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def vectors(self) -> np.ndarray:
        """The committed embeddings, a read-only float16 memmap ``[count, D]`` (empty array when none)."""
        n = self.count()
        if n == 0:
            return np.zeros((0, self.dim), np.float16)
        return np.memmap(self.root / VECTORS, dtype=np.float16, mode="r", shape=(n, self.dim))

    def present(self, paths: Sequence[str]) -> set[str]:
        """Which of ``paths`` are indexed already."""
        found: set[str] = set()
        for lo in range(0, len(paths), 500):  # stay below SQLite's bound-parameter limit
            chunk = paths[lo:lo + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(f"SELECT path FROM items WHERE path IN ({marks})", chunk))
        return found

    def items(self, ids: Iterable[int]) -> dict[int, Item]:
        """``{id: Item}`` for the given ids (unknown ids are left out)."""
        ids = [int(i) for i in ids]
        out: dict[int, Item] = {}
        for lo in range(0, len(ids), 500):
            chunk = ids[lo:lo + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT id, path, realpath, bytes, mtime, width, height FROM items "
                                       f"WHERE id IN ({marks})", chunk):
                out[row[0]] = Item(*row)
        return out

    def ids_of_realpaths(self, realpaths: Iterable[str]) -> set[int]:
        realpaths = list(realpaths)
        marks = ",".join("?" * len(realpaths))
        return {r[0] for r in self.db.execute(f"SELECT id FROM items WHERE realpath IN ({marks})", realpaths)}

    def skipped_counts(self) -> dict[str, int]:
        """Files currently recorded as unreadable, by reason."""
        return dict(self.db.execute("SELECT reason, COUNT(*) FROM skipped GROUP BY reason ORDER BY reason").fetchall())

    def all_paths(self) -> list[str]:
        """Every indexed path in id order (tests and small tools; O(N) memory)."""
        return [r[0] for r in self.db.execute("SELECT path FROM items ORDER BY id")]

    # ------------------------------------------------------------------ writing

    def commit(self, vectors: np.ndarray, items: Sequence[NewItem], skipped: Sequence[tuple[str, str, str]]) -> None:
        """Append one batch: ``vectors`` ``[len(items), D]`` float32, their records, and skipped files.

        Vectors are written and fsynced first, rows committed second (the commit point).
        """
        if len(vectors) != len(items):
            raise ValueError(f"{len(vectors)} vectors for {len(items)} items")
        start = self.count()
        if len(items):
            with open(self.root / VECTORS, "r+b") as fh:
                fh.seek(start * self.row_bytes)
                fh.write(np.ascontiguousarray(vectors, dtype=np.float16).tobytes())
                fh.truncate()
                fh.flush()
                os.fsync(fh.fileno())
        rows = [(start + i, it.path, os.path.realpath(it.path), it.bytes, it.mtime, it.width, it.height)
                for i, it in enumerate(items)]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            # a file that reads now is no longer skipped; one that failed again keeps its latest reason
            self.db.executemany("DELETE FROM skipped WHERE path = ?", [(it.path,) for it in items])
            self.db.executemany("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?)", list(skipped))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _repair(self) -> None:
        """Cut ``vectors.f16`` back to the committed rows (a batch killed between fsync and commit)."""
        path = self.root / VECTORS
        path.touch(exist_ok=True)
        want = self.count() * self.row_bytes
        have = path.stat().st_size
        if have < want:
            raise DataError(f"{path} holds {have // self.row_bytes} vectors but {ITEMS} lists {self.count()} images; "
                            "the index is damaged", hint="delete the index folder and build it again")
        if have > want:
            with open(path, "r+b") as fh:
                fh.truncate(want)

    def close(self) -> None:
        self.db.close()


def read_header(root: Path) -> dict[str, Any]:
    path = Path(root) / HEADER
    try:
        header = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{root} is not a style index (no {HEADER})",
                        hint="build one with: nstzoo index build --weights W --input DIR --out INDEX") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable index header ({exc})") from exc
    if header.get("format") != FORMAT:
        raise DataError(f"{path}: index format {header.get('format')!r}, this nstzoo reads format {FORMAT}")
    return header


def write_header(root: Path, header: dict[str, Any]) -> None:
    atomic_write(Path(root) / HEADER, lambda tmp: Path(tmp).write_text(json.dumps(header, indent=2, default=str) + "\n"))


@contextlib.contextmanager
def write_lock(root: Path) -> Iterator[None]:
    """Exclusive writer lock on an INDEX folder; released by the OS if the process dies."""
    with open(Path(root) / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{root} is being written by another process",
                            hint="wait for that `nstzoo index build/add` to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
