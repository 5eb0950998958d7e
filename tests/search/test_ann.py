"""The faiss layer: which index for which size, and that every kind finds what exact search finds."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from nstzoo.errors import DataError
from nstzoo.search.ann import AUTO_FLAT_MAX, VectorIndex, plan_index


def test_plan_follows_the_collection_size():
    assert plan_index(50, 1024).kind == "flat"
    assert plan_index(AUTO_FLAT_MAX, 1024).kind == "flat"
    big = plan_index(1_000_000, 1024)
    assert (big.kind, big.nlist, big.m, big.nbits, big.nprobe, big.rerank) == ("ivfpq", 1024, 64, 8, 128, 256)
    assert plan_index(AUTO_FLAT_MAX + 1, 1024).nlist == 256
    assert plan_index(10_000_000, 1024).nlist == 4096
    assert plan_index(200_000, 256).m == 16  # the quickstart's 256-D encoder: 16-D sub-vectors
    small = plan_index(3000, 64, "ivfpq")
    assert small.nlist <= 3000 // 39 and small.nbits < 8 and small.train_size == 3000
    assert plan_index(10, 16, "hnsw").kind == "hnsw"
    with pytest.raises(DataError, match="at least 256"):
        plan_index(100, 16, "ivfpq")
    with pytest.raises(DataError, match="unknown index kind"):
        plan_index(100, 16, "annoy")


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(clusters, size=n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind, min_recall", [("flat", 1.0), ("ivfpq", 0.9), ("hnsw", 0.9)])
def test_every_kind_agrees_with_exact_search(kind, min_recall):
    base = clustered(3000, 64, 60, seed=0)
    store = base.astype(np.float16)  # as StyleIndex stores them
    queries = clustered(100, 64, 60, seed=1)
    exact = faiss.knn(queries, store.astype(np.float32), 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    index = VectorIndex.build(plan_index(len(base), 64, kind), store)
    scores, ids = index.search(queries, 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(ids, exact)])
    assert recall >= min_recall
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    # exclusions: the best hit left out, still k results, none of them excluded
    _, again = index.search(queries[:1], 10, exclude=[int(ids[0, 0])])
    assert again.shape == (1, 10) and ids[0, 0] not in again[0]


def test_ivfpq_rerank_gives_exact_scores():
    base = clustered(2000, 32, 40, seed=2).astype(np.float16)
    index = VectorIndex.build(plan_index(len(base), 32, "ivfpq"), base)
    q = clustered(1, 32, 40, seed=3)
    scores, ids = index.search(q, 5)
    np.testing.assert_allclose(scores[0], base[ids[0]].astype(np.float32) @ q[0], rtol=1e-6)
    # without the store the same index returns PQ-approximate scores
    approx, _ = VectorIndex(index.index, index.plan, None).search(q, 5)
    assert not np.allclose(approx[0], scores[0], atol=1e-4)
