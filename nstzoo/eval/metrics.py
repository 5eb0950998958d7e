"""Style and content retrieval metrics of ALADIN-NST (Ruta et al., paper 000, §4.1-4.2).

A test set, per NST method, stylizes every content image with every style image (400 x 100 in the
paper). Embeddings are compared by cosine similarity. All values are percentages.

- **style mAP**: every stylized image is a query over the *other* stylized images of the same
  method; positives are those with the query's style id. AP of one query = mean, over its
  positives, of the precision at that positive's rank; mAP = mean AP over queries.
- **style IR-k**: corpus = the method's stylized images + the source style images. For each
  stylized query, its other stylizations of the same style (and itself) are removed, so the only
  item sharing its style is its source style image; IR-k = % of queries whose source style image
  ranks in the top k.
- **content mAP / IR-k**: the same with content ids, and the un-stylized content images as the
  IR targets. For a style encoder these should be *low* (the embedding should not know content).

Ties (equal cosine scores) follow scikit-learn's ``average_precision_score``: items with equal
scores form one threshold, so the precision at a positive is
``#positives scoring >= s / #items scoring >= s``; this is order-independent and equals sklearn's
value for each query exactly. IR-k is likewise pessimistic: the target's rank is 1 + the number of
remaining corpus items scoring >= the target, so a tie never counts in the target's favour.

Queries whose label has no other positive (e.g. a style stylized only once by that method) have no
defined AP and are left out of that mAP; a test set with none is reported as NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from .manifest import ROLES
from .retrieval import l2_normalize, similarity_blocks

__all__ = ["average_precision_rows", "sort_rows", "target_ranks", "evaluate", "ROLES"]


def sort_rows(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Each row of ``scores`` sorted ascending, removed items (``valid`` False) as ``-inf`` first.

    The expensive half of :func:`average_precision_rows`, split out so that several label sets
    (style ids, content ids) can share one sort of the same similarity block.

    Returns:
        ``[b, N]`` float array.
    """
    if valid is not None:
        scores = np.where(valid, scores, -np.inf)
    return np.sort(scores, axis=1)


def average_precision_rows(
    scores: np.ndarray,
    positive: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    sorted_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Average precision of each query row, with sklearn's tie semantics.

    Precision at a positive scoring ``s`` = ``#valid positives >= s / #valid items >= s``; the AP
    of a row is its mean over the row's valid positives. Both counts come from binary searches:
    of the positives' scores in the sorted row, and in the sorted positives.

    Args:
        scores: ``[b, N]`` finite similarity of each query to each corpus item.
        positive: ``[b, N]`` bool, the relevant items of each query.
        valid: ``[b, N]`` bool, the items that take part at all (False = removed, e.g. the query
            itself); None = all.
        sorted_rows: ``sort_rows(scores, valid)`` if the caller already has it.

    Returns:
        ``[b]`` float64 AP in [0, 1]; NaN for a row without valid positives.
    """
    if sorted_rows is None:
        sorted_rows = sort_rows(scores, valid)
    positive = np.asarray(positive, dtype=bool)
    if valid is not None:
        positive = positive & valid
    b, n = sorted_rows.shape
    ap = np.full(b, np.nan)
    # all positives of the block at once (row-major, so each row's run is contiguous)
    rows, cols = np.nonzero(positive)
    values = scores[rows, cols]
    bounds = np.searchsorted(rows, np.arange(b + 1))
    for r in range(b):
        p = np.sort(values[bounds[r] : bounds[r + 1]])
        if p.size == 0:
            continue  # no positive: AP undefined
        # removed items are -inf and never >= a (finite) positive
        all_ge = n - np.searchsorted(sorted_rows[r], p, side="left")
        pos_ge = p.size - np.searchsorted(p, p, side="left")
        ap[r] = np.mean(pos_ge / all_ge)
    return ap


def target_ranks(target_scores: np.ndarray, *blocks: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray:
    """Pessimistic 1-based rank of each query's target among competitors spread over blocks.

    Args:
        target_scores: ``[b]`` similarity of each query to its target.
        blocks: ``(scores, competing)`` pairs: ``scores`` ``[b, N_i]`` and ``competing`` ``[b, N_i]``
            bool (None = all), the items that compete with the target. The target itself must
            not be marked as competing.

    Returns:
        ``[b]`` int64: 1 + the number of competitors scoring >= the target.
    """
    t = np.asarray(target_scores)[:, None]
    rank = np.ones(t.shape[0], dtype=np.int64)
    for scores, competing in blocks:
        ge = scores >= t
        if competing is not None:
            ge &= competing
        rank += ge.sum(1)
    return rank


def _codes(values: Sequence | np.ndarray) -> np.ndarray:
    """Integer code per value; empty ("" or None) -> -1. Equal values share a code."""
    table: dict = {}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and v == "") or (isinstance(v, float) and np.isnan(v)):
            out[i] = -1
        else:
            out[i] = table.setdefault(v.item() if isinstance(v, np.generic) else v, len(table))
    return out


def _method_metrics(
    x: np.ndarray,
    style: np.ndarray,
    content: np.ndarray,
    style_src: np.ndarray,
    style_target: np.ndarray,
    content_src: np.ndarray,
    content_target: np.ndarray,
    ks: tuple[int, ...],
    block: int,
) -> dict:
    """Metrics of one method's stylized images ``x`` ``[n, D]`` (normalised), see :func:`evaluate`."""
    n = x.shape[0]
    ap = {"style": np.empty(n), "content": np.empty(n)}
    rank = {"style": np.empty(n, dtype=np.int64), "content": np.empty(n, dtype=np.int64)}
    labels = {"style": style, "content": content}
    sources = {"style": (style_src, style_target), "content": (content_src, content_target)}
    for rows, sims in similarity_blocks(x, x, block):
        b = rows.stop - rows.start
        not_self = np.ones((b, n), dtype=bool)
        not_self[np.arange(b), np.arange(rows.start, rows.stop)] = False
        sorted_sims = sort_rows(sims, not_self)  # one sort serves both label sets
        for kind in ("style", "content"):
            same = labels[kind][rows, None] == labels[kind][None, :]  # [b, n]
            ap[kind][rows] = average_precision_rows(sims, same, not_self, sorted_rows=sorted_sims)
            src, target = sources[kind]
            src_sims = x[rows] @ src.T  # [b, n_src]
            t = target[rows]
            others = np.ones_like(src_sims, dtype=bool)
            others[np.arange(b), t] = False
            # competitors: stylized images of other labels (this drops the query too) + other sources
            rank[kind][rows] = target_ranks(src_sims[np.arange(b), t], (sims, ~same), (src_sims, others))
    out: dict = {"n_queries": n}
    for kind in ("style", "content"):
        a = ap[kind][~np.isnan(ap[kind])]
        m = {"mAP": float(100.0 * a.mean()) if a.size else float("nan")}
        for k in ks:
            m[f"IR-{k}"] = float(100.0 * np.mean(rank[kind] <= k))
        out[kind] = m
    return out


def evaluate(
    embeddings: np.ndarray,
    role: Sequence[str] | np.ndarray,
    method: Sequence | np.ndarray,
    style_id: Sequence | np.ndarray,
    content_id: Sequence | np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10),
    block: int = 1024,
) -> dict:
    """Style and content mAP / IR-k of a test set, per NST method and averaged over methods.

    One row per image; the arrays line up with ``embeddings``. ``role`` is ``"stylized"``,
    ``"style"`` (a source style image) or ``"content"`` (an un-stylized content image). Stylized
    rows carry a ``method``, a ``style_id`` and a ``content_id``; style rows a ``style_id``;
    content rows a ``content_id``; other fields may be anything (``""`` or None, conventionally).
    The source images are shared by every method: each method's IR corpus is its own stylized
    images plus all source images of that kind. ``nstzoo.eval.manifest.manifest_arrays`` turns a
    ``manifest.csv`` into these arrays.

    Memory is the embeddings (a normalised copy) plus about ``20 x block x n_method`` bytes (700 MB
    for block 1024 and the paper's 40,000 images per method); the ``n x n`` similarity matrix is never
    built. The ranking does not depend on ``block``, except that float32 round-off in the
    similarities (about 1e-7) can differ between block shapes and reorder near-exact ties: at the
    paper's scale that moves mAP by ~1e-7 percentage points.

    Args:
        embeddings: ``[N, D]``; L2-normalised here (cosine similarity).
        role, method, style_id, content_id: ``[N]`` each.
        ks: the k of IR-k.
        block: query rows per similarity block.

    Returns:
        ``{"methods": {name: M, ...}, "mean": M}`` where ``M`` is::

            {"style":   {"mAP": float, "IR-1": float, "IR-5": float, "IR-10": float},
             "content": {"mAP": float, "IR-1": float, ...},
             "n_queries": int}

        Values are percentages (Python floats); the ``IR-*`` keys follow ``ks``. Methods are in
        sorted order. ``"mean"`` is the unweighted mean of each value over methods (the paper's
        "average values" column) and its ``n_queries`` is the total.

    Raises:
        DataError: mismatched lengths, an unknown role, a stylized row without a method or id, a
            stylized id with no (or more than one) source image, or bad embeddings. Messages name
            rows by their 0-based index into the arrays ("row i").
    """
    emb = np.asarray(embeddings)
    n = len(role)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise DataError(f"embeddings have shape {emb.shape}, expected [{n}, D] (one row per manifest row)")
    for name, arr in (("method", method), ("style_id", style_id), ("content_id", content_id)):
        if len(arr) != n:
            raise DataError(f"{name} has {len(arr)} entries, role has {n}")
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    role = np.asarray(role, dtype=object)
    unknown = sorted({str(r) for r in role} - set(ROLES))
    if unknown:
        raise DataError(f"unknown role {unknown[0]!r}; expected one of {', '.join(ROLES)}")
    stylized = np.flatnonzero(role == "stylized")
    if stylized.size == 0:
        raise DataError("no stylized rows to evaluate")
    style_codes, content_codes = _codes(style_id), _codes(content_id)

    def source_index(kind: str, codes: np.ndarray, raw: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the source images of ``kind``, and a code -> position-among-them lookup."""
        rows = np.flatnonzero(role == kind)
        lookup = np.full(max(int(codes.max()) + 1, 1), -1, dtype=np.int64)
        for pos, r in enumerate(rows):
            c = codes[r]
            if c < 0:
                raise DataError(f"{kind} image at row {r} has no {kind}_id")
            if lookup[c] >= 0:
                raise DataError(f"{kind}_id {raw[r]!r} has more than one {kind} image (rows {rows[lookup[c]]} and {r})")
            lookup[c] = pos
        return rows, lookup

    style_rows, style_lookup = source_index("style", style_codes, style_id)
    content_rows, content_lookup = source_index("content", content_codes, content_id)
    for name, codes, raw, lookup, kind in (
        ("style_id", style_codes, style_id, style_lookup, "style"),
        ("content_id", content_codes, content_id, content_lookup, "content"),
    ):
        c = codes[stylized]
        if (c < 0).any():
            r = stylized[np.flatnonzero(c < 0)[0]]
            raise DataError(f"stylized row {r} has no {name}")
        missing = lookup[c] < 0
        if missing.any():
            r = stylized[np.flatnonzero(missing)[0]]
            raise DataError(f"stylized row {r}: {name} {raw[r]!r} has no {kind} image in the test set")
    methods = [method[r] for r in stylized]
    if any(m is None or m == "" for m in methods):
        r = stylized[next(i for i, m in enumerate(methods) if m is None or m == "")]
        raise DataError(f"stylized row {r} has no method")

    x = l2_normalize(emb)
    style_src, content_src = x[style_rows], x[content_rows]
    method_arr = np.asarray(methods, dtype=object)
    per_method: dict[str, dict] = {}
    for name in sorted(set(methods), key=str):
        idx = stylized[method_arr == name]
        # a method's rows are usually one contiguous run: a view then spares a copy of them
        contiguous = idx[-1] - idx[0] + 1 == idx.size
        per_method[str(name)] = _method_metrics(
            x[idx[0] : idx[-1] + 1] if contiguous else x[idx],
            style_codes[idx],
            content_codes[idx],
            style_src,
            style_lookup[style_codes[idx]],
            content_src,
            content_lookup[content_codes[idx]],
            ks,
            block,
        )
    mean: dict = {"n_queries": int(sum(m["n_queries"] for m in per_method.values()))}
    for kind in ("style", "content"):
        keys = per_method[next(iter(per_method))][kind].keys()
        mean[kind] = {key: float(np.mean([m[kind][key] for m in per_method.values()])) for key in keys}
    return {"methods": per_method, "mean": mean}
