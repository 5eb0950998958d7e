"""Throughput of every registered stylizer (images/s), at 256 and 512 px, batch 1 and 8.

Stylizers with no weights in the store run with random weights (the speed is the same; the
output says so). Not part of the tests. Example::

    python bench/stylizers.py --device cuda --sizes 256 512 --batches 1 8
"""

from __future__ import annotations

import argparse
import time

import torch

from nstzoo.errors import NstzooError
from nstzoo.registry import get_registry
from nstzoo.weights import load_stylizer, weights_path


def measure(model: torch.nn.Module, size: int, batch: int, device: torch.device, repeats: int) -> float:
    content = torch.rand(batch, 3, size, size, device=device)
    style = torch.rand(batch, 3, size, size, device=device)
    with torch.inference_mode():
        model(content, style)  # warm-up (allocator, cuDNN autotuning)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            model(content, style)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="stylizer names (default: all registered)")
    args = parser.parse_args()
    device = torch.device(args.device)
    registry = get_registry()
    names = args.only or list(registry.stylizers())
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'stylizer':<14}{'weights':<10}" + "".join(f"{f'{s}px b{b}':>14}" for s in args.sizes for b in args.batches))
    for name in names:
        try:
            spec = registry.stylizer(name)
            has_weights = not spec.needs_weights or weights_path(name).is_file()
            model = load_stylizer(name, device=device, random_init=not has_weights, registry=registry)
        except (NstzooError, RuntimeError) as exc:
            print(f"{name:<14}cannot load: {str(exc).splitlines()[0]}")
            continue
        label = "store" if spec.needs_weights and has_weights else ("none" if not spec.needs_weights else "random")
        cells = []
        for size in args.sizes:
            for batch in args.batches:
                try:
                    cells.append(f"{measure(model, size, batch, device, args.repeats):>11.2f}/s ")
                except (RuntimeError, NstzooError) as exc:  # e.g. out of memory at 512 px, batch 8
                    cells.append(f"{'error':>14}")
                    print(f"  {name} {size}px b{batch}: {str(exc).splitlines()[0]}")
        print(f"{name:<14}{label:<10}" + "".join(cells))
    print("weights: store = from the weights store, random = random init (speed only), none = needs none")


if __name__ == "__main__":
    main()
