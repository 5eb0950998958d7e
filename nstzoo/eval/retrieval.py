"""Cosine retrieval over embeddings, in blocks of queries so that memory stays O(block x N).

Embeddings are L2-normalised float32 rows, so an inner product is a cosine similarity: a faiss
``IndexFlatIP`` over them ranks by cosine (:class:`CosineIndex`, for plain top-k look-ups).

The evaluation needs more than a top-k: mAP needs the rank of *every* positive of every query, and
IR-k needs per-query exclusions (the query's other same-style stylizations). Materialising the
N x N similarity matrix is not an option (40,000^2 float32 = 6.4 GB), so :func:`similarity_blocks`
yields one ``[b, N]`` block of query rows at a time; the caller derives its numbers from the block
and drops it. Exclusions are described by ids, never by an N x N mask (:func:`exclusion_mask`
builds the ``[b, N]`` slice for one block only).
"""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np

from ..errors import DataError

__all__ = ["l2_normalize", "CosineIndex", "similarity_blocks", "exclusion_mask", "blocked_topk"]


def l2_normalize(x: np.ndarray, *, name: str = "embeddings") -> np.ndarray:
    """Rows scaled to unit length, as a C-contiguous float32 array (a copy).

    Args:
        x: ``[N, D]`` embeddings, any real dtype.
        name: what ``x`` is, for error messages.

    Returns:
        ``[N, D]`` float32, every row of L2 norm 1.

    Raises:
        DataError: ``x`` is not 2-D, has a non-finite value, or has an all-zero row (no direction,
            so no cosine).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"{name} must be a 2-D array [N, D], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise DataError(f"{name} must be real numbers, got dtype {x.dtype}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DataError(f"{name} row {int(np.flatnonzero(bad)[0])} has a non-finite value (NaN or inf)")
    # accumulate the squared norms in float64 (float32 squares of large values would overflow),
    # without making a float64 copy of the whole array
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = norms == 0
    if zero.any():
        raise DataError(f"{name} row {int(np.flatnonzero(zero)[0])} is all zeros; its cosine similarity is undefined")
    out = np.empty(x.shape, dtype=np.float32)
    np.divide(x, norms[:, None], out=out, casting="unsafe")
    return out


class CosineIndex:
    """A faiss ``IndexFlatIP`` over L2-normalised rows: exact cosine top-k search.

    Args:
        corpus: ``[N, D]`` embeddings; normalised here (a copy is kept by faiss).
    """

    def __init__(self, corpus: np.ndarray):
        corpus = l2_normalize(corpus, name="corpus")
        self.dim = corpus.shape[1]
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(corpus)

    @property
    def ntotal(self) -> int:
        """Number of corpus rows."""
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar corpus rows of each query.

        Args:
            queries: ``[Q, D]`` embeddings; normalised here.
            k: how many neighbours, ``1 <= k <= ntotal``.

        Returns:
            ``(scores, ids)``: ``[Q, k]`` float32 cosine similarities, best first, and ``[Q, k]``
            int64 corpus row indices.
        """
        queries = l2_normalize(queries, name="queries")
        if queries.shape[1] != self.dim:
            raise DataError(f"queries have dimension {queries.shape[1]}, the corpus has {self.dim}")
        if not 1 <= k <= self.ntotal:
            raise ValueError(f"k must be in [1, {self.ntotal}], got {k}")
        scores, ids = self.index.search(queries, k)
        return scores, ids


def similarity_blocks(queries: np.ndarray, corpus: np.ndarray, block: int = 1024) -> Iterator[tuple[slice, np.ndarray]]:
    """Cosine similarities of query rows against the whole corpus, ``block`` query rows at a time.

    Both inputs must already be L2-normalised float32 (see :func:`l2_normalize`); this is the
    inner loop of the evaluation and does not copy them again.

    Args:
        queries: ``[Q, D]``.
        corpus: ``[N, D]``.
        block: the most query rows per block; memory is ``block x N`` floats.

    Yields:
        ``(rows, sims)``: the slice of query rows, and ``sims`` ``[rows, N]`` float32.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if queries.shape[1] != corpus.shape[1]:
        raise DataError(f"queries have dimension {queries.shape[1]}, the corpus has {corpus.shape[1]}")
    corpus_t = corpus.T
    for start in range(0, queries.shape[0], block):
        rows = slice(start, min(start + block, queries.shape[0]))
        yield rows, queries[rows] @ corpus_t


def exclusion_mask(
    rows: slice,
    n_corpus: int,
    *,
    self_index: np.ndarray | None = None,
    query_groups: np.ndarray | None = None,
    corpus_groups: np.ndarray | None = None,
) -> np.ndarray:
    """Which corpus items each query of one block must not see, as a ``[b, N]`` boolean mask.

    Corpus item ``j`` is excluded for query ``i`` when ``self_index[i] == j`` (the query itself is in
    the corpus), or when ``query_groups[i] == corpus_groups[j]`` and that group is ``>= 0`` (e.g.
    the other stylizations of the query's style). A group of ``-1`` never excludes anything, so
    rows of the corpus that belong to no group (source images) can be marked with it.

    Args:
        rows: the block's slice of query rows.
        n_corpus: ``N``.
        self_index: ``[Q]`` int, the corpus row of each query, or ``-1`` where it is not in the corpus.
        query_groups: ``[Q]`` int group of each query.
        corpus_groups: ``[N]`` int group of each corpus item (``-1``: none).

    Returns:
        ``[b, N]`` bool, True = excluded.
    """
    b = rows.stop - rows.start
    mask = np.zeros((b, n_corpus), dtype=bool)
    if (query_groups is None) != (corpus_groups is None):
        raise ValueError("query_groups and corpus_groups go together")
    if query_groups is not None:
        q = np.asarray(query_groups)[rows]
        mask |= (q[:, None] == np.asarray(corpus_groups)[None, :]) & (q[:, None] >= 0)
    if self_index is not None:
        s = np.asarray(self_index)[rows]
        inside = s >= 0
        mask[np.flatnonzero(inside), s[inside]] = True
    return mask


def blocked_topk(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    block: int = 1024,
    self_index: np.ndarray | None = None,
    query_groups: np.ndarray | None = None,
    corpus_groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k with per-query exclusions (see :func:`exclusion_mask`), in blocks.

    Args:
        queries: ``[Q, D]`` embeddings (normalised here).
        corpus: ``[N, D]`` embeddings (normalised here).
        k: neighbours per query, ``1 <= k <= N``.
        block, self_index, query_groups, corpus_groups: as in :func:`similarity_blocks` and
            :func:`exclusion_mask`.

    Returns:
        ``(scores, ids)``, each ``[Q, k]``, best first. Ties are broken by the lower corpus index.
        Where fewer than ``k`` items survive the exclusions, the tail is ``-inf`` / ``-1``.
    """
    queries = l2_normalize(queries, name="queries")
    corpus = l2_normalize(corpus, name="corpus")
    n = corpus.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    out_scores = np.empty((queries.shape[0], k), dtype=np.float32)
    out_ids = np.empty((queries.shape[0], k), dtype=np.int64)
    for rows, sims in similarity_blocks(queries, corpus, block):
        excluded = exclusion_mask(rows, n, self_index=self_index, query_groups=query_groups, corpus_groups=corpus_groups)
        sims[excluded] = -np.inf
        # a stable sort on the negated scores: deterministic tie order (lower index first)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(sims, order, axis=1)
        order[np.isneginf(top)] = -1
        out_scores[rows], out_ids[rows] = top, order
    return out_scores, out_ids
