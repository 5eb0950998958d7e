"""Benchmark of nstzoo.eval.evaluate on synthetic embeddings shaped like the paper's test sets.

    python bench/eval.py                 # small (100 x 25), medium (200 x 50), paper (400 x 100)
    python bench/eval.py --case small    # just one
    python bench/eval.py --block 256

The paper's case is one NST method's test set: 400 styles x 100 contents = 40,000 stylized images
plus 400 style and 100 content images, D = 1024. Its full similarity matrix would be 40,000^2
float32 = 6.4 GB; evaluate() works in blocks of query rows, so its peak memory is the embeddings
plus O(block x 40,000). Embeddings are clustered by style (with a weaker content signal and noise)
so that the metrics are neither 0 nor 100. Prints wall time and peak RSS (ru_maxrss, the whole
process: it includes the embeddings themselves, printed separately).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from nstzoo.eval import evaluate

CASES = {"small": (100, 25), "medium": (200, 50), "paper": (400, 100)}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def synthetic(n_styles: int, n_contents: int, dim: int, seed: int = 0):
    """Embeddings ``[S*C + S + C, D]`` float32 and the manifest columns, in grid order."""
    rng = np.random.default_rng(seed)
    style = rng.standard_normal((n_styles, dim), dtype=np.float32)
    content = rng.standard_normal((n_contents, dim), dtype=np.float32)
    n = n_styles * n_contents
    emb = np.empty((n + n_styles + n_contents, dim), dtype=np.float32)
    # stylized = style + 0.5 content + 4 noise, written in place to keep the benchmark's own memory small
    for s in range(n_styles):
        rows = slice(s * n_contents, (s + 1) * n_contents)
        emb[rows] = style[s] + 0.5 * content + 4.0 * rng.standard_normal((n_contents, dim), dtype=np.float32)
    emb[n : n + n_styles] = style + 4.0 * rng.standard_normal((n_styles, dim), dtype=np.float32)
    emb[n + n_styles :] = content + 2.0 * rng.standard_normal((n_contents, dim), dtype=np.float32)
    role = ["stylized"] * n + ["style"] * n_styles + ["content"] * n_contents
    method = ["synthetic"] * n + [""] * (n_styles + n_contents)
    style_id = [f"s{i // n_contents}" for i in range(n)] + [f"s{i}" for i in range(n_styles)] + [""] * n_contents
    content_id = [f"c{i % n_contents}" for i in range(n)] + [""] * n_styles + [f"c{i}" for i in range(n_contents)]
    return emb, role, method, style_id, content_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--block", type=int, default=1024)
    args = parser.parse_args()
    for name in CASES if args.case == "all" else [args.case]:
        n_styles, n_contents = CASES[name]
        emb, *columns = synthetic(n_styles, n_contents, args.dim)
        print(f"[{name}] {n_styles} styles x {n_contents} contents = {n_styles * n_contents} stylized, "
              f"D={args.dim}, block={args.block}; embeddings {emb.nbytes / 2**20:.0f} MiB, "
              f"peak RSS before evaluate {peak_rss_mib():.0f} MiB", flush=True)
        t0 = time.perf_counter()
        out = evaluate(emb, *columns, block=args.block)
        wall = time.perf_counter() - t0
        print(f"[{name}] evaluate: {wall:.1f} s wall, peak RSS {peak_rss_mib():.0f} MiB "
              f"(full similarity matrix would be {(n_styles * n_contents) ** 2 * 4 / 2**30:.1f} GiB)")
        print(f"[{name}] " + json.dumps(out["mean"]), flush=True)
        del emb


if __name__ == "__main__":
    main()
