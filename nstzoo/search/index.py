"""``StyleIndex``: build, extend and query a faiss index of images with an exported style encoder.

A build streams images through the encoder in batches (only a batch of pixels is ever in memory),
commits every ``checkpoint_every`` images (see :mod:`nstzoo.search.store` for the commit
protocol), then builds the faiss index the collection's size calls for
(:func:`nstzoo.search.ann.plan_index`). A killed build is resumed by running it again: committed
images are skipped, the rest are embedded, nothing is duplicated.

The header records the encoder's name, config and a digest of its weights; an index is only ever
queried or extended with embeddings of that same encoder (:class:`EncoderMismatchError`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError, NstzooError
from ..files import atomic_write
from .ann import KINDS, IndexPlan, VectorIndex, plan_index
from .store import FAISS, FORMAT, HEADER, Item, NewItem, Store, read_header, write_header, write_lock

__all__ = ["StyleIndex", "AddReport", "SearchResult", "Hit", "SearchIndexError", "EncoderMismatchError",
           "encoder_identity", "collect_paths", "skip_reason"]

#: How many skipped files a report lists by name (all are counted, and all are kept in items.sqlite).
REPORT_SKIPPED = 20


class SearchIndexError(NstzooError):
    """A style index is missing, unfinished or cannot be used as asked."""


class EncoderMismatchError(SearchIndexError):
    """The encoder offered for a query or an addition is not the one the index was built with."""


# ---------------------------------------------------------------------------------------- encoder


def encoder_identity(weights: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load an encoder (exported ``.safetensors`` or run folder) and describe it for an index header.

    Returns:
        ``(model, identity)`` with identity ``{"name", "digest", "config", "dim", "input_size",
        "weights"}``. ``digest`` is the weights digest the export header carries
        (``tensors_sha256``), else the same digest computed over the loaded state dict, so an export
        and the run checkpoint it came from have the same identity.
    """
    from ..eval.embed import input_size, resolve_encoder
    from ..weights import tensors_sha256

    model, meta = resolve_encoder(weights, device=device)
    model.eval()
    digest = meta.get("tensors_sha256") or tensors_sha256(model.state_dict())
    config = meta.get("config") or {}
    if dataclasses.is_dataclass(config):  # a run checkpoint: the TrainConfig it was trained with
        options = model.export_config() if hasattr(model, "export_config") else dict(config.encoder.options)
        config = {"encoder": config.encoder.name, "options": options, "step": meta.get("step")}
    size = input_size(model)
    with torch.inference_mode():
        dim = int(model(torch.zeros(1, 3, size, size, device=device)).shape[1])
    return model, {"name": meta.get("name") or config.get("encoder"), "digest": digest, "config": config,
                   "dim": dim, "input_size": size, "weights": str(Path(weights).resolve())}


# ---------------------------------------------------------------------------------------- images


def collect_paths(inputs: Sequence[str | os.PathLike]) -> tuple[list[str], dict[str, int]]:
    """Absolute image paths from folders (recursively, sorted) and files, in input order, deduplicated.

    Returns:
        ``(paths, listing_skipped)``: the paths, and what :func:`~nstzoo.data.folder.list_images`
        left out of the folders (links to files already listed, unsupported formats ...), by reason.

    Raises:
        DataError: an input does not exist, or a folder holds no images.
    """
    from ..data.folder import list_images

    seen: dict[str, None] = {}
    listing: dict[str, int] = {}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            summary = getattr(found, "summary", None)
            for reason, skipped in (summary.skipped.items() if summary is not None else ()):
                if skipped:
                    listing[reason] = listing.get(reason, 0) + len(skipped)
        elif p.is_file():
            found = [p]
        else:
            raise DataError(f"--input {item}: no such file or folder")
        for f in found:
            seen.setdefault(os.path.abspath(f), None)
    return list(seen), listing


def skip_reason(exc: DataError) -> str:
    """``unreadable | too large | unsupported | corrupt``: why an image file could not be used."""
    from ..data.decode import CorruptImageError, ImageTooLargeError, UnreadableImageError, UnsupportedImageError

    for cls, reason in ((UnreadableImageError, "unreadable"), (ImageTooLargeError, "too large"),
                        (UnsupportedImageError, "unsupported"), (CorruptImageError, "corrupt")):
        if isinstance(exc, cls):
            return reason
    return "corrupt"


class _SquashedFiles(Dataset):
    """Image files squashed to ``size`` x ``size``; an unreadable file gives its reason instead."""

    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from ..data.folder import load_image

        path = self.paths[i]
        try:
            st = os.stat(path)
        except OSError as exc:  # gone since it was listed
            return {"path": path, "reason": "unreadable", "message": f"cannot read: {exc.strerror or exc}"}
        if st.st_size == 0:  # common in scraped folders (failed downloads): its own count
            return {"path": path, "reason": "empty", "message": "the file is empty"}
        try:
            image = load_image(path)
        except DataError as exc:
            return {"path": path, "reason": skip_reason(exc), "message": exc.message}
        h, w = image.shape[1:]
        image = torch.nn.functional.interpolate(image[None], size=(self.size, self.size), mode="bilinear",
                                                antialias=True, align_corners=False)[0]
        return {"path": path, "image": image, "bytes": st.st_size, "mtime": st.st_mtime, "width": w, "height": h}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "image" in it]
    bad = [it for it in items if "image" not in it]
    return {"images": torch.stack([it.pop("image") for it in good]) if good else None, "good": good, "bad": bad}


def _batches(paths: Sequence[str], size: int, batch_size: int, workers: int) -> Iterator[dict[str, Any]]:
    loader = DataLoader(_SquashedFiles(paths, size), batch_size=batch_size, num_workers=workers,
                        shuffle=False, collate_fn=_collate)
    yield from loader


@torch.inference_mode()
def _embed(model: torch.nn.Module, images: torch.Tensor, device: torch.device) -> np.ndarray:
    """``[B,3,S,S]`` -> L2-normalised float32 ``[B, D]``."""
    emb = model(images.to(device)).float()
    return torch.nn.functional.normalize(emb, dim=1).cpu().numpy()


# ---------------------------------------------------------------------------------------- results


@dataclass
class AddReport:
    """What one build or add did."""

    listed: int
    """Image paths found under the inputs."""
    added: int
    present: int
    """Already in the index (a resumed build, or images added twice)."""
    skipped: dict[str, int]
    """Image files that could not be used this run, by reason (:func:`skip_reason`, or ``empty``)."""
    skipped_files: list[dict[str, str]]
    """The first few of them: path, reason, message (all are kept in items.sqlite)."""
    listing_skipped: dict[str, int]
    """Left out when the folders were listed (second links to a file, unsupported formats ...)."""
    count: int
    """Images in the index afterwards."""
    plan: dict[str, Any]
    seconds: float
    resumed: bool = False
    """The index held images before this run (a resumed build, or an add)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Hit:
    rank: int
    id: int
    score: float
    path: str
    width: int
    height: int


@dataclass
class SearchResult:
    """The ``k`` nearest indexed images of one query (a moodboard when several images were given)."""

    queries: list[str]
    k: int
    hits: list[Hit]
    index: str
    encoder: str
    kind: str
    count: int
    excluded: int = 0
    pending: int = 0
    """Images committed but not yet in the faiss index (an add in progress or interrupted)."""

    @property
    def moodboard(self) -> bool:
        return len(self.queries) > 1

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "moodboard": self.moodboard}


# ---------------------------------------------------------------------------------------- the index


class StyleIndex:
    """A style-search index in a folder (layout: :mod:`nstzoo.search.store`).

    Build or extend one with :meth:`build` / :meth:`add`, open one with :meth:`open`, query it with
    :meth:`search` (image files; several = a moodboard) or :meth:`search_vector` (an embedding).

    Example::

        index = StyleIndex.build("encoder.safetensors", ["photos/", "art/"], "my-index")
        result = index.search(["query.jpg"], k=25)
        for hit in result.hits:
            print(hit.rank, hit.score, hit.path)
    """

    def __init__(self, root: str | os.PathLike, header: dict[str, Any]):
        self.root = Path(root)
        self.header = header
        self.store = Store(self.root, self.dim)
        self._encoder: tuple[str, str, torch.nn.Module] | None = None
        self._vectors: VectorIndex | None = None
        self.last_report: AddReport | None = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, root: str | os.PathLike) -> StyleIndex:
        """Open an existing index folder (raises :class:`~nstzoo.errors.DataError` if it is not one)."""
        return cls(root, read_header(Path(root)))

    @classmethod
    def build(cls, weights: str | os.PathLike, inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
              kind: str = "auto", device: str | torch.device = "cpu", batch_size: int = 32, workers: int = 0,
              checkpoint_every: int = 1024, progress: Callable[[int], None] | None = None,
              log: Callable[[str], None] | None = None) -> StyleIndex:
        """Create the index in ``out`` over the images under ``inputs``, or resume it.

        Running a build again on the same folder with the same encoder resumes it (or adds what is
        new); another ``kind`` re-indexes the stored vectors without embedding again. The report is
        ``index.last_report``.

        Args:
            weights: exported encoder ``.safetensors`` or a run folder.
            inputs: image folders (recursive) and files.
            out: the INDEX folder (created; a non-empty folder that is not an index is refused).
            kind: ``auto | flat | ivfpq | hnsw`` (:mod:`nstzoo.search.ann`).
            device: where the encoder runs.
            batch_size: images per forward pass.
            workers: DataLoader processes decoding images.
            checkpoint_every: images per commit (what a kill can lose).
            progress: called with the number of input paths dealt with since the last call.
            log: one-line messages.

        Raises:
            EncoderMismatchError: ``out`` is an index of another encoder.
            DataError: bad inputs, or no image could be read.
        """
        if kind not in KINDS:
            raise DataError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")
        out = Path(out)
        dev = torch.device(device)
        model, identity = encoder_identity(weights, dev)
        if (out / HEADER).is_file():
            index = cls.open(out)
            index._check_identity(identity, weights)
            if index.header["kind"] != kind:
                if log:
                    log(f"index kind {index.header['kind']} -> {kind}: the stored vectors are indexed again")
                index.header["kind"] = kind
                write_header(out, index.header)
        else:
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise DataError(f"{out} exists and is not a style index; refusing to write into it",
                                hint="give --out a new or empty folder")
            out.mkdir(parents=True, exist_ok=True)
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            write_header(out, {"format": FORMAT, "created": now, "kind": kind, "encoder": identity, "faiss": None})
            index = cls.open(out)
        index._encoder = (identity["weights"], str(dev), model)
        index.add(inputs, weights=weights, device=dev, batch_size=batch_size, workers=workers, checkpoint_every=checkpoint_every,
                  progress=progress, log=log)
        return index

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return int(self.header["encoder"]["dim"])

    @property
    def kind(self) -> str:
        """The kind asked for (``auto`` included); :attr:`plan` says what was built."""
        return str(self.header["kind"])

    @property
    def plan(self) -> IndexPlan | None:
        faiss_info = self.header.get("faiss")
        return IndexPlan.from_dict(faiss_info["plan"]) if faiss_info else None

    def __len__(self) -> int:
        return self.store.count()

    def info(self) -> dict[str, Any]:
        """Header, counts and skipped files by reason, as JSON-ready data."""
        vi = self._loaded_vector_index()
        indexed = vi.ntotal if vi is not None else 0
        return {"index": str(self.root), "count": len(self), "indexed": indexed, "kind": self.kind,
                "plan": self.plan.as_dict() if self.plan else None, "encoder": self.header["encoder"],
                "skipped": self.store.skipped_counts(), "created": self.header.get("created"),
                "updated": self.header.get("updated")}

    def vectors(self) -> np.ndarray:
        """The stored embeddings ``[N, D]`` float16 (memory-mapped), row = id."""
        return self.store.vectors()

    def items(self, ids: Sequence[int]) -> list[Item]:
        """Records of ``ids``, in that order."""
        found = self.store.items(ids)
        return [found[int(i)] for i in ids]

    # ------------------------------------------------------------------ encoder

    def _check_identity(self, identity: dict[str, Any], weights: str | os.PathLike) -> None:
        have = self.header["encoder"]
        if identity["digest"] != have["digest"] or identity["dim"] != have["dim"]:
            raise EncoderMismatchError(
                f"{weights} is encoder {identity['name']!r} (weights {identity['digest'][:12]}, {identity['dim']}-D) "
                f"but the index {self.root} was built with {have['name']!r} (weights {have['digest'][:12]}, "
                f"{have['dim']}-D); embeddings of different encoders are not comparable",
                hint=f"use the encoder it was built with ({have['weights']}), or build a new index with this one")

    def encoder(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The index's encoder: ``weights`` (checked against the header) or the recorded weights path.

        Raises:
            EncoderMismatchError: ``weights`` holds another encoder or other weights.
            WeightsError: the recorded weights are gone and no ``weights`` was given.
        """
        from ..errors import WeightsError

        source = str(Path(weights).resolve()) if weights is not None else self.header["encoder"]["weights"]
        if self._encoder and self._encoder[:2] == (source, str(torch.device(device))):
            return self._encoder[2]
        if weights is None and not Path(source).exists():
            raise WeightsError(f"the encoder this index was built with is gone: {source}",
                               hint=f"pass --weights FILE with the same weights (digest "
                                    f"{self.header['encoder']['digest'][:12]})")
        model, identity = encoder_identity(source, device)
        self._check_identity(identity, source)
        self._encoder = (source, str(torch.device(device)), model)
        return model

    # ------------------------------------------------------------------ adding

    def add(self, inputs: Sequence[str | os.PathLike], *, weights: str | os.PathLike | None = None,
            device: str | torch.device = "cpu", batch_size: int = 32, workers: int = 0, checkpoint_every: int = 1024,
            progress: Callable[[int], None] | None = None, log: Callable[[str], None] | None = None) -> AddReport:
        """Embed and add the images under ``inputs`` that are not in the index yet, then update faiss.

        With no ``inputs`` it only brings the faiss index up to date (an interrupted build).
        Arguments as in :meth:`build`; ``weights`` defaults to the recorded encoder.
        """
        if batch_size < 1 or checkpoint_every < 1:
            raise DataError("batch size and checkpoint interval must be >= 1")
        started = time.perf_counter()
        dev = torch.device(device)
        paths, listing_skipped = collect_paths(inputs) if inputs else ([], {})
        with write_lock(self.root):
            before = len(self)
            model = self.encoder(weights, dev)
            pending: list[str] = []
            for lo in range(0, len(paths), 10_000):
                chunk = paths[lo:lo + 10_000]
                have = self.store.present(chunk)
                pending.extend(p for p in chunk if p not in have)
            present = len(paths) - len(pending)
            if progress and present:
                progress(present)
            if log and before and paths:
                log(f"{before} images indexed already; {present} of the {len(paths)} inputs are among them")
            skipped, skipped_files = self._ingest(pending, model, dev, batch_size, workers, checkpoint_every, progress)
            if len(self) == 0:
                detail = ", ".join(f"{v} {k}" for k, v in sorted(skipped.items())) or "no inputs"
                example = f"; e.g. {skipped_files[0]['path']}: {skipped_files[0]['message']}" if skipped_files else ""
                raise DataError(f"no image could be indexed ({detail}){example}",
                                hint="check the --input folders (every skipped file is in the index's items.sqlite)")
            self._sync_faiss(log)
        self.last_report = AddReport(listed=len(paths), added=len(self) - before, present=present, skipped=skipped,
                                     skipped_files=skipped_files, listing_skipped=listing_skipped, count=len(self),
                                     plan=self.plan.as_dict(), seconds=round(time.perf_counter() - started, 2),
                                     resumed=before > 0)
        return self.last_report

    def _ingest(self, paths: Sequence[str], model: torch.nn.Module, device: torch.device, batch_size: int,
                workers: int, checkpoint_every: int, progress: Callable[[int], None] | None,
                ) -> tuple[dict[str, int], list[dict[str, str]]]:
        """Embed ``paths`` batch by batch and commit every ``checkpoint_every`` files; returns what was skipped."""
        skipped: dict[str, int] = {}
        skipped_files: list[dict[str, str]] = []
        vecs: list[np.ndarray] = []
        good: list[NewItem] = []
        bad: list[tuple[str, str, str]] = []

        def commit() -> None:
            self.store.commit(np.concatenate(vecs) if vecs else np.zeros((0, self.dim), np.float32), good, bad)
            vecs.clear()
            good.clear()
            bad.clear()

        done = 0
        for batch in _batches(paths, self.header["encoder"]["input_size"], batch_size, workers):
            if batch["images"] is not None:
                vecs.append(_embed(model, batch["images"], device))
                good.extend(NewItem(it["path"], it["bytes"], it["mtime"], it["width"], it["height"])
                            for it in batch["good"])
            for it in batch["bad"]:
                bad.append((it["path"], it["reason"], it["message"]))
                skipped[it["reason"]] = skipped.get(it["reason"], 0) + 1
                if len(skipped_files) < REPORT_SKIPPED:
                    skipped_files.append({"path": it["path"], "reason": it["reason"], "message": it["message"]})
            n = len(batch["good"]) + len(batch["bad"])
            # commit whenever the files dealt with cross a multiple of checkpoint_every
            if (done + n) // checkpoint_every > done // checkpoint_every:
                commit()
            done += n
            if progress:
                progress(n)
        commit()
        return skipped, skipped_files

    def _sync_faiss(self, log: Callable[[str], None] | None) -> None:
        """Bring ``index.faiss`` up to the committed vectors: extend it, or rebuild when the plan changed."""
        n, vectors = len(self), self.store.vectors()
        target = plan_index(n, self.dim, self.kind)
        current = self._loaded_vector_index()
        if current is not None:
            plan = current.plan
            # a coarse quantizer trained on a quarter of today's collection is outgrown: retrain
            outgrown = target.kind == "ivfpq" and target.nlist >= 4 * plan.nlist
            if plan.kind == target.kind and not outgrown and current.ntotal <= n:
                if current.ntotal == n:
                    return
                current.store = vectors
                current.add(vectors, current.ntotal)
                self._write_faiss(current)
                return
        if log:
            log(f"building the {target.kind} index over {n} vectors")
        self._write_faiss(VectorIndex.build(target, vectors, log=log))

    def _write_faiss(self, vi: VectorIndex) -> None:
        # faiss file first, header second: _loaded_vector_index() checks that they agree
        atomic_write(self.root / FAISS, lambda tmp: faiss.write_index(vi.index, tmp))
        self.header["faiss"] = {"plan": vi.plan.as_dict(), "count": vi.ntotal}
        self.header["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        write_header(self.root, self.header)
        self._vectors = vi

    def _loaded_vector_index(self) -> VectorIndex | None:
        """The faiss index on disk, or None when absent or out of step with the header."""
        if self._vectors is not None:
            return self._vectors
        plan = self.plan
        if plan is None or not (self.root / FAISS).is_file():
            return None
        index = faiss.read_index(str(self.root / FAISS))
        expected = {"flat": faiss.IndexFlatIP, "ivfpq": faiss.IndexIVFPQ, "hnsw": faiss.IndexHNSWFlat}[plan.kind]
        if not isinstance(index, expected) or index.ntotal != self.header["faiss"]["count"]:
            return None  # killed between writing index.faiss and the header: the next add rebuilds
        self._vectors = VectorIndex(index, plan, self.store.vectors())
        return self._vectors

    def _vector_index(self) -> VectorIndex:
        vi = self._loaded_vector_index()
        if vi is None:
            raise SearchIndexError(f"the index {self.root} is not finished (its faiss index is missing or stale)",
                                   hint=f"finish it with: nstzoo index add --index {self.root}")
        if vi.store is None or len(vi.store) < vi.ntotal:
            vi.store = self.store.vectors()
        return vi

    # ------------------------------------------------------------------ searching

    def embed_images(self, paths: Sequence[str | os.PathLike], *, weights: str | os.PathLike | None = None,
                     device: str | torch.device = "cpu", batch_size: int = 32) -> np.ndarray:
        """L2-normalised embeddings ``[Q, D]`` of query images, preprocessed exactly as indexed images.

        Raises:
            DataError: a query image cannot be read (queries are never silently dropped).
        """
        dev = torch.device(device)
        model = self.encoder(weights, dev)
        out = []
        for batch in _batches([os.path.abspath(p) for p in paths], self.header["encoder"]["input_size"],
                              batch_size, 0):
            if batch["bad"]:
                it = batch["bad"][0]
                raise DataError(f"query image {it['path']}: {it['message']}")
            out.append(_embed(model, batch["images"], dev))
        return np.concatenate(out)

    def search_vector(self, vector: np.ndarray, k: int = 25, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [k'], ids [k'])`` nearest to one embedding ``[D]`` (normalised here), ``exclude`` ids left out."""
        v = np.asarray(vector, np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise SearchIndexError(f"query has dimension {v.shape[0]}, the index {self.dim}")
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0:
            raise SearchIndexError("query embedding is zero or not finite")
        scores, ids = self._vector_index().search((v / norm)[None], k, exclude)
        return scores[0], ids[0]

    def search(self, queries: Sequence[str | os.PathLike], k: int = 25, *, exclude_same_file: bool = False,
               weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> SearchResult:
        """The ``k`` indexed images nearest in style to the query image(s).

        Several images form a moodboard (ALADIN §5): the mean of their unit embeddings, renormalised.

        Args:
            queries: image files.
            k: how many results.
            exclude_same_file: leave out indexed images that are one of the query files (symlinks resolved).
            weights: the encoder to embed queries with (default: the recorded one; another is refused).
        """
        if not queries:
            raise DataError("give at least one query image")
        if k < 1:
            raise DataError(f"k must be >= 1, got {k}")
        emb = self.embed_images(queries, weights=weights, device=device)
        board = emb.mean(axis=0)  # mean of unit vectors; search_vector renormalises
        exclude = self.store.ids_of_realpaths(os.path.realpath(q) for q in queries) if exclude_same_file else set()
        scores, ids = self.search_vector(board, k, sorted(exclude))
        items = self.store.items(ids.tolist())
        hits = [Hit(rank=r + 1, id=int(i), score=round(float(s), 6), path=items[int(i)].path,
                    width=items[int(i)].width, height=items[int(i)].height)
                for r, (s, i) in enumerate(zip(scores, ids)) if i >= 0]
        vi = self._vector_index()
        return SearchResult(queries=[str(q) for q in queries], k=k, hits=hits, index=str(self.root),
                            encoder=str(self.header["encoder"]["name"]), kind=vi.plan.kind, count=vi.ntotal,
                            excluded=len(exclude), pending=len(self) - vi.ntotal)

    def close(self) -> None:
        self.store.close()
