"""Batched stylization (the ``nstzoo stylize`` engine) vs the original-style per-image loop, same weights.

"Original-style loop" = what the authors' test scripts do: a fresh process with stock torch settings
calls the module on one content and one style at a time (``module(content[i:i+1], style[i:i+1])``).
"Batched" = what ``nstzoo stylize`` does with the same pairs, each with its own style: one
:class:`nstzoo.stylize.Stylizer` call on the whole batch (``stylize_controlled``, channels-last,
the allocator setting of :mod:`nstzoo.stylize.runtime`). Each side runs in its own child process,
because the engine's allocator setting is process-wide and would otherwise speed up the loop too.
Children alternate (loop, batched, loop, batched ...), and the best time of each side is kept, so a
noisy shared machine penalises both alike. Random weights unless the store has real ones (speed
does not depend on the values); attention caps are lifted so both sides do the same work at full
size. Not part of the tests. Example::

    OMP_NUM_THREADS=2 python bench/stylize_speed.py --threads 2 --sizes 256 512 --pairs 8 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

UNCAPPED = 1 << 30  # max_tokens for the attention stylizers: never resize, so both sides stylize at full size


def images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random images ``[n,3,size,size]`` in [0, 1] (low-frequency colour plus some texture)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bicubic",
                                          align_corners=False)
    return (low + 0.1 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def child(mode: str, name: str, size: int, pairs: int, threads: int) -> dict[str, object]:
    """One timed run in this process: ``loop`` (stock settings) or ``batched`` (the engine)."""
    torch.set_num_threads(threads)
    from nstzoo.registry import get_registry
    from nstzoo.weights import load_stylizer, weights_path

    spec = get_registry().stylizer(name)
    random = spec.needs_weights and not weights_path(name).is_file()
    options = {"max_tokens": UNCAPPED} if "max_tokens" in spec.default_options else {}
    module = load_stylizer(name, random_init=random, **options)
    content, style = images(pairs, size, 1), images(pairs, size, 2)
    with torch.inference_mode():
        if mode == "loop":
            def run() -> None:
                for i in range(pairs):
                    module(content[i:i + 1], style[i:i + 1])
        else:
            from nstzoo.stylize import Controls, Stylizer

            stylizer = Stylizer(name, module, spec.controls, max_memory=64 * 1024**3)

            def run() -> None:
                stylizer.stylize(content, [style], Controls())
        run()  # warm-up: oneDNN primitive caches, allocator
        # Cheap stylizers (milliseconds per batch) are timed over repeated runs for at least 2 s, keeping
        # the best, so scheduler noise does not decide their ratio; expensive ones run once.
        seconds, spent = float("inf"), 0.0
        while spent < 2.0 or seconds == float("inf"):
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            seconds, spent = min(seconds, elapsed), spent + elapsed
    return {"mode": mode, "seconds": seconds, "random_weights": random}


def measure(name: str, size: int, pairs: int, repeats: int, threads: int) -> dict[str, object]:
    best = {"loop": float("inf"), "batched": float("inf")}
    random = True
    for _ in range(repeats):
        for mode in ("loop", "batched"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--only", name, "--sizes", str(size),
                                  "--pairs", str(pairs), "--threads", str(threads)],
                                 capture_output=True, text=True, check=True, env={**os.environ})
            record = json.loads(out.stdout.strip().splitlines()[-1])
            best[mode] = min(best[mode], record["seconds"])
            random = record["random_weights"]
    return {"stylizer": name, "size": size, "pairs": pairs, "loop_s_per_image": best["loop"] / pairs,
            "batched_s_per_image": best["batched"] / pairs, "speedup": best["loop"] / best["batched"],
            "random_weights": random}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--pairs", type=int, nargs="+", default=[8, 4], help="pairs per size (one per --sizes)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the best is kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="stylizer names (default: all registered)")
    parser.add_argument("--json", action="store_true", help="one JSON record per line instead of the table")
    parser.add_argument("--child", choices=["loop", "batched"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.only[0], args.sizes[0], args.pairs[0], args.threads)))
        return
    from nstzoo.registry import get_registry

    names = args.only or list(get_registry().stylizers())
    pairs_for = dict(zip(args.sizes, args.pairs + [args.pairs[-1]] * len(args.sizes)))
    if not args.json:
        print(f"torch={torch.__version__} threads={args.threads} (best of {args.repeats}, alternating processes)")
        print(f"{'stylizer':<11}{'size':>6}{'pairs':>6}{'loop s/img':>12}{'batched s/img':>15}{'loop/batched':>14}")
    for name in names:
        for size in args.sizes:
            row = measure(name, size, pairs_for[size], args.repeats, args.threads)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{name:<11}{size:>6}{row['pairs']:>6}{row['loop_s_per_image']:>12.3f}"
                      f"{row['batched_s_per_image']:>15.3f}{row['speedup']:>13.2f}x", flush=True)


if __name__ == "__main__":
    main()
