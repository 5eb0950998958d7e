"""Benchmark of the style-search index (nstzoo.search.ann) at a million images, on CPU.

    nice python bench/search.py                     # 1,000,000 x 1024-D, the auto plan (IVF-PQ + rerank)
    python bench/search.py --n 200000 --threads 2   # smaller
    python bench/search.py --sweep                  # also recall/latency for other nprobe / rerank values

Synthetic vectors stand in for ALADIN-NST embeddings: ``--clusters`` (10k) Gaussian clusters
(styles), whose unit centres are scattered around ``--families`` (1k) family centres (movements,
palettes: cluster centres of one family have cosine ~0.5). Each point is its centre, plus an offset
of norm ~``--spread`` (0.75) inside the cluster's own random ``--rank``-D (8) subspace, plus
isotropic noise of norm ~``--noise`` (0.3), L2-normalised and stored as float16 in a
memory-mapped file, exactly as ``StyleIndex`` stores embeddings. The low-rank spread gives a
cluster internal structure, as a style's neighbourhood has: with isotropic noise alone every
member of a 1024-D cluster is equally near every other, and the "true" top 10 would be decided by
noise no index can see. Queries are 1,000 fresh points from the same distribution.

Two harder variants show where IVF loses recall (README has the figures): ``--families 0``
(10k independent random centres: no structure at the scale of the 1,024 IVF lists, so k-means
cannot group clusters and some neighbours fall in lists a query does not probe) and
``--shared --rank 64`` (all clusters spread along the same directions).

Prints: the plan ``plan_index`` picks, build time (train + add), bytes per vector (faiss codes in
RAM, plus the float16 rerank store on disk), single-query latency p50/p99 over the queries, and
recall@10 against exact search over the same stored vectors. Peak memory stays near 3 GB: the
vectors live on disk (2 GB as float16) and are read in chunks.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from nstzoo.search.ann import ADD_CHUNK, IndexPlan, VectorIndex, plan_index


def peak_rss_gib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20


def generate(out: np.ndarray, rng: np.random.Generator, centers: np.ndarray, bases: np.ndarray,
             spread: float, noise: float, block: int = 8192) -> None:
    """Fill ``out`` ``[N, D]`` with unit rows of random clusters: centre + spread·(z @ basis) + noise.

    ``bases`` ``[clusters, r, D]``: each cluster spreads in its own r-D subspace; ``[1, r, D]``: all
    clusters share one.
    """
    n, dim = out.shape
    r = bases.shape[1]
    for lo in range(0, n, block):
        b = min(block, n - lo)
        c = rng.integers(len(centers), size=b)
        z = rng.standard_normal((b, r), dtype=np.float32)
        offset = z @ bases[0] if len(bases) == 1 else np.einsum("br,brd->bd", z, bases[c])
        x = centers[c] + (spread / np.sqrt(r)) * offset
        x += (noise / np.sqrt(dim)) * rng.standard_normal((b, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[lo:lo + b] = x


def exact_topk(queries: np.ndarray, store: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k ids ``[Q, k]`` over ``store``, chunk by chunk (no full float32 copy)."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for lo in range(0, len(store), ADD_CHUNK):
        s, i = faiss.knn(queries, np.ascontiguousarray(store[lo:lo + ADD_CHUNK], dtype=np.float32), k,
                         metric=faiss.METRIC_INNER_PRODUCT)
        all_s, all_i = np.concatenate([best_s, s], 1), np.concatenate([best_i, i + lo], 1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)
    return best_i


def measure(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, k: int) -> dict[str, float]:
    """Single-query latency p50/p99 (ms) and recall@k over ``queries``."""
    times, hits = [], 0
    for q in range(len(queries)):
        t0 = time.perf_counter()
        _, ids = index.search(queries[q:q + 1], k)
        times.append(time.perf_counter() - t0)
        hits += len(np.intersect1d(ids[0], truth[q]))
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "recall": hits / (len(queries) * k)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--spread", type=float, default=0.75, help="norm of the in-cluster offset")
    parser.add_argument("--rank", type=int, default=8, help="dimension of each cluster's own subspace")
    parser.add_argument("--noise", type=float, default=0.3, help="norm of the isotropic noise")
    parser.add_argument("--families", type=int, default=1000,
                        help="clusters are grouped into this many families (0: independent random centres)")
    parser.add_argument("--shared", action="store_true",
                        help="all clusters spread in one shared subspace (try --rank 64): the hard case for IVF")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kind", default="auto", choices=["auto", "flat", "ivfpq", "hnsw"])
    parser.add_argument("--sweep", action="store_true", help="also try other nprobe / rerank values")
    parser.add_argument("--workdir", type=Path, default=None, help="where the float16 store goes (default: a temp dir)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        rng = np.random.default_rng(0)
        centers = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
        if args.families:  # cluster centres scattered around family centres: cos ~0.5 within a family
            family = rng.standard_normal((args.families, args.dim), dtype=np.float32)
            family /= np.linalg.norm(family, axis=1, keepdims=True)
            centers *= 1.0 / np.sqrt(args.dim)
            centers += family[rng.integers(args.families, size=args.clusters)]
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        # each cluster's own subspace: `--rank` of the rows of one random rotation
        rotation = np.linalg.qr(rng.standard_normal((args.dim, args.dim)).astype(np.float32))[0]
        bases = (rotation[None, :args.rank] if args.shared
                 else rotation[rng.integers(args.dim, size=(args.clusters, args.rank))])
        t0 = time.perf_counter()
        store = np.lib.format.open_memmap(Path(tmp) / "vectors.npy", mode="w+", dtype=np.float16,
                                          shape=(args.n, args.dim))
        generate(store, rng, centers, bases, args.spread, args.noise)
        store.flush()
        queries = np.empty((args.queries, args.dim), np.float32)
        generate(queries, np.random.default_rng(1), centers, bases, args.spread, args.noise)
        print(f"data: {args.n:,} x {args.dim}-D float16 ({store.nbytes / 2**30:.2f} GiB on disk), "
              f"{args.clusters:,} clusters, generated in {time.perf_counter() - t0:.0f} s; "
              f"{args.threads} faiss threads", flush=True)

        t0 = time.perf_counter()
        truth = exact_topk(queries, store, args.k)
        exact_s = time.perf_counter() - t0
        print(f"exact search (ground truth, batched brute force over the store): {exact_s:.1f} s "
              f"= {exact_s / args.queries * 1e3:.1f} ms/query", flush=True)

        plan = plan_index(args.n, args.dim, args.kind)
        print(f"plan: {plan.as_dict()}", flush=True)
        t0 = time.perf_counter()
        index = VectorIndex.build(plan, store, log=lambda m: print("  " + m, flush=True))
        build_s = time.perf_counter() - t0
        ram = index.code_bytes() if plan.kind != "flat" else args.n * args.dim * 4
        disk = store.itemsize * args.dim if plan.kind == "ivfpq" else 0
        print(f"build: {build_s:.1f} s (train + add); bytes/vector: {ram / args.n:.1f} in RAM (faiss)"
              + (f" + {disk} on disk (float16 rerank store)" if disk else "")
              + f"; peak RSS {peak_rss_gib():.1f} GiB", flush=True)

        m = measure(index, queries, truth, args.k)
        print(f"default: recall@{args.k} = {m['recall']:.4f}; latency p50 {m['p50_ms']:.2f} ms, "
              f"p99 {m['p99_ms']:.2f} ms (1 query at a time, {args.queries} queries)", flush=True)

        if args.sweep and plan.kind == "ivfpq":
            print("sweep (same trained index):")
            for nprobe in sorted({max(1, plan.nprobe // 2), plan.nprobe, min(plan.nlist, plan.nprobe * 2),
                                  min(plan.nlist, plan.nprobe * 4)}):
                for rerank in (0, 128, 256):
                    trial = IndexPlan.from_dict({**plan.as_dict(), "nprobe": nprobe, "rerank": rerank})
                    variant = VectorIndex(index.index, trial, store if rerank else None)
                    r = measure(variant, queries, truth, args.k)
                    print(f"  nprobe {nprobe:4d} rerank {rerank:4d}: recall@{args.k} {r['recall']:.4f}, "
                          f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms", flush=True)
            VectorIndex(index.index, plan, store)  # restore the plan's nprobe on the shared faiss index


if __name__ == "__main__":
    main()
