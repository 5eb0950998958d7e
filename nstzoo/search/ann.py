"""Faiss indexes over unit-norm embeddings: which index for how many vectors, build, search, rerank.

Embeddings are L2-normalised, so inner product = cosine and every index uses
``METRIC_INNER_PRODUCT``. Three kinds:

* ``flat`` — ``IndexFlatIP``: exact, ``4·D`` bytes per vector in RAM, brute-force search.
  ``auto`` picks it up to :data:`AUTO_FLAT_MAX` vectors (100k × 1024-D = 400 MB, a few ms a query).
* ``ivfpq`` — ``IndexIVFPQ`` (``auto`` above :data:`AUTO_FLAT_MAX`), followed by an exact rerank:
  the IVF-PQ codes (``m`` bytes + an 8-byte id per vector in RAM) shortlist
  ``max(rerank, 4·k)`` candidates, which are rescored with the stored float16 vectors (read
  from a memory-mapped file, so they cost disk, not RAM). Parameters from the collection size
  ``n`` and dimension ``D`` (:func:`plan_index`):

  - ``nlist`` = the power of two nearest ``√n`` (1M → 1024), at most ``n / 39`` (faiss wants
    ≥ 39 training points per centroid); k-means and assignment cost grow with nlist × D, and
    ``√n`` keeps building a 1M × 1024-D index to 4–5 minutes on 2 CPU cores (4√n would be ~4× that);
  - ``m`` = the largest divisor of ``D`` not above ``D / 16`` (1024 → 64 sub-quantizers of 16
    dims, 64 bytes a vector), ``nbits`` = 8 (4–7 for tiny collections, so that every PQ
    centroid has training points);
  - ``nprobe`` = ``max(16, nlist / 8)`` (1M → 128 lists, 1/8 of the codes scanned per query);
  - ``rerank`` = 256 candidates rescored exactly.

  ``bench/search.py`` (1M clustered 1024-D vectors, 2 CPU cores): recall@10 = 1.00 against exact
  search, p50 5 ms a query, 77 bytes a vector in RAM. Recall reaches 1.00 at nlist/16 already; the
  extra lists are a margin for collections with less structure: with 10k *independent* random
  cluster centres (nothing for k-means to group at the scale of 1,024 lists) recall@10 is 0.86 at
  nlist/16, 0.88 at nlist/8 and 0.92 at nlist/2 — use ``flat`` (exact) or ``hnsw`` for such data.
  The PQ codes alone give recall 0.76; the rerank is what brings it to 1.00.
* ``hnsw`` — ``IndexHNSWFlat`` (M = 32, efConstruction = 80, efSearch = max(128, k)): fast
  queries on full vectors, at ``4·D + 256`` bytes a vector and slow builds; only when asked for.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import faiss
import numpy as np

from ..errors import DataError

__all__ = ["KINDS", "AUTO_FLAT_MAX", "IVFPQ_MIN", "IndexPlan", "plan_index", "VectorIndex"]

KINDS: tuple[str, ...] = ("auto", "flat", "ivfpq", "hnsw")
#: ``auto`` uses an exact flat index up to this many vectors, IVF-PQ + rerank above.
AUTO_FLAT_MAX = 100_000
#: Fewer vectors than this cannot train a useful IVF-PQ (and faiss k-means would need more points).
IVFPQ_MIN = 256
#: Vectors converted to float32 and handed to faiss at once (64k × 1024 × 4 B = 256 MiB).
ADD_CHUNK = 65_536


@dataclasses.dataclass(frozen=True)
class IndexPlan:
    """What faiss index to build, with its parameters (see the module docstring)."""

    kind: str
    nlist: int = 0
    m: int = 0
    nbits: int = 0
    nprobe: int = 0
    rerank: int = 0
    train_size: int = 0
    hnsw_m: int = 0
    ef_construction: int = 0
    ef_search: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The non-zero fields, for headers and JSON output."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v or k == "kind"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexPlan:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def _pow2_near(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def plan_index(n: int, dim: int, kind: str = "auto") -> IndexPlan:
    """The index for ``n`` vectors of dimension ``dim``; ``kind`` is one of :data:`KINDS`.

    Raises:
        DataError: unknown kind, or ``ivfpq`` asked for fewer than :data:`IVFPQ_MIN` vectors.
    """
    if kind not in KINDS:
        raise DataError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")
    if kind == "auto":
        kind = "flat" if n <= AUTO_FLAT_MAX else "ivfpq"
    if kind == "flat":
        return IndexPlan("flat")
    if kind == "hnsw":
        return IndexPlan("hnsw", hnsw_m=32, ef_construction=80, ef_search=128)
    if n < IVFPQ_MIN:
        raise DataError(f"an ivfpq index needs at least {IVFPQ_MIN} images, this one has {n}",
                        hint="use --kind flat (exact; also what --kind auto picks for small collections)")
    nlist = max(1, min(_pow2_near(math.sqrt(n)), n // 39, 65_536))
    m = max(d for d in range(1, max(1, dim // 16) + 1) if dim % d == 0)
    # 2**nbits PQ centroids per sub-quantizer need ~39 training points each.
    nbits = int(min(8, max(4, math.floor(math.log2(n / 39)))))
    train_size = min(n, max(50 * nlist, 39 * 2**nbits))
    return IndexPlan("ivfpq", nlist=nlist, m=m, nbits=nbits, nprobe=min(nlist, max(16, nlist // 8)),
                     rerank=256, train_size=train_size)


def _as_f32(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows, dtype=np.float32)


class VectorIndex:
    """A faiss index plus, for ``ivfpq``, the stored vectors it reranks its shortlist with.

    Args:
        index: a faiss index made by :meth:`build` (or read back with ``faiss.read_index``).
        plan: its parameters.
        store: ``[N, D]`` stored vectors (float16 memmap or any array); needed by ``ivfpq`` for
            the exact rerank, ignored by the others.
    """

    def __init__(self, index: faiss.Index, plan: IndexPlan, store: np.ndarray | None = None):
        self.index, self.plan, self.store = index, plan, store
        if plan.kind == "ivfpq":
            faiss.extract_index_ivf(index).nprobe = plan.nprobe
        elif plan.kind == "hnsw":
            index.hnsw.efSearch = plan.ef_search

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def empty(cls, plan: IndexPlan, dim: int, store: np.ndarray | None = None) -> VectorIndex:
        """An empty, untrained index of ``plan``."""
        if plan.kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(dim)
        elif plan.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, plan.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = plan.ef_construction
        elif plan.kind == "ivfpq":
            if dim % plan.m:
                raise DataError(f"ivfpq: m={plan.m} does not divide the dimension {dim}")
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, plan.nlist, plan.m, plan.nbits,
                                     faiss.METRIC_INNER_PRODUCT)
            # 10 k-means iterations (faiss' IVF default) and a fixed seed: the same vectors give the
            # same index, so a resumed build equals an uninterrupted one.
            index.cp.seed = 1234
            index.pq.cp.seed = 1234
        else:
            raise DataError(f"unknown index kind {plan.kind!r}")
        return cls(index, plan, store)

    @classmethod
    def build(cls, plan: IndexPlan, vectors: np.ndarray, *, seed: int = 0,
              log: Callable[[str], None] | None = None) -> VectorIndex:
        """Train (``ivfpq``: on ``plan.train_size`` rows drawn with ``seed``) and add all ``vectors``.

        Args:
            vectors: ``[N, D]`` unit rows, float16 or float32, e.g. a memmap; read in chunks of
                :data:`ADD_CHUNK` rows, so it is never copied whole. Kept as the rerank store.
        """
        n, dim = vectors.shape
        out = cls.empty(plan, dim, store=vectors)
        if plan.kind == "ivfpq":
            rng = np.random.default_rng(seed)
            # sorted rows: sequential reads from a memmap
            rows = np.sort(rng.choice(n, size=min(n, plan.train_size), replace=False))
            if log:
                log(f"training ivfpq (nlist={plan.nlist}, m={plan.m}, nbits={plan.nbits}) on {len(rows)} vectors")
            out.index.train(_as_f32(vectors[rows]))
        out.add(vectors, 0)
        return out

    def add(self, vectors: np.ndarray, start: int) -> None:
        """Append rows ``vectors[start:]`` (their ids are their row numbers), in chunks."""
        if start != self.ntotal:
            raise DataError(f"index holds {self.ntotal} vectors, cannot append from row {start}")
        for lo in range(start, vectors.shape[0], ADD_CHUNK):
            self.index.add(_as_f32(vectors[lo:lo + ADD_CHUNK]))

    def search(self, queries: np.ndarray, k: int, exclude: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows by cosine for each query, skipping ids in ``exclude``.

        Args:
            queries: ``[Q, D]`` unit rows.
            k: results per query.
            exclude: row ids never returned (e.g. the query images themselves).

        Returns:
            ``(scores, ids)``, ``[Q, k']`` float32 and int64 with ``k' = min(k, N - excluded)``,
            best first. ``ivfpq`` scores are exact (reranked) up to float16 storage.
        """
        queries = _as_f32(np.atleast_2d(queries))
        excluded = set(int(i) for i in exclude)
        want = max(0, min(k, self.ntotal - len(excluded)))
        if want == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        fetch = min(self.ntotal, want + len(excluded))
        rerank = self.plan.kind == "ivfpq" and self.store is not None
        if rerank:
            fetch = min(self.ntotal, max(fetch, self.plan.rerank, 4 * want))
        elif self.plan.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.plan.ef_search, fetch)
        scores, ids = self.index.search(queries, fetch)
        out_s = np.full((len(queries), want), -np.inf, np.float32)
        out_i = np.full((len(queries), want), -1, np.int64)
        for q in range(len(queries)):
            keep = (ids[q] >= 0) & ~np.isin(ids[q], list(excluded)) if excluded else ids[q] >= 0
            cand_i, cand_s = ids[q][keep], scores[q][keep]
            if rerank:
                order = np.argsort(cand_i)  # ascending ids: sequential reads from the memmap
                cand_i = cand_i[order]
                cand_s = _as_f32(self.store[cand_i]) @ queries[q]
            # stable sort on negated scores: ties keep the lower id first, deterministically
            top = np.argsort(-cand_s, kind="stable")[:want] if rerank else np.arange(min(want, len(cand_i)))
            out_s[q, :len(top)], out_i[q, :len(top)] = cand_s[top], cand_i[top]
        return out_s, out_i

    def code_bytes(self) -> int:
        """Bytes of the serialised faiss index (what it takes in RAM, within a few %)."""
        return int(faiss.serialize_index(self.index).nbytes)
