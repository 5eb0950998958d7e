"""Peak memory and time of ``nstzoo stylize``'s engine per stylizer at 1024, 2048 and 4096 px, on the CPU.

Each measurement runs in a fresh child process, so its peak resident set size (``ru_maxrss``) is
its own: the model (random weights unless the store has real ones: the same memory), a square
smooth content of the given side, a 512-px style, and one :class:`nstzoo.stylize.Stylizer` call
under ``--max-memory``. Images larger than the budget allows go through in overlapped windows at
full resolution (see :mod:`nstzoo.stylize.tiling`). Also reported, per run:

- ``windows``: how many tiles the image was cut into (1 = one call);
- ``detail``: mean absolute difference between the output and the output downsampled 4x and
  upsampled again — the energy above a quarter of the resolution. An output stylized at a capped
  working size and resized up (what SANet and PAMA used to do) scores ~0 here;
- ``bytes/px`` (``--calibrate``): (peak − RSS before stylizing) / pixels for one untiled call, the
  figure each built-in module declares as ``peak_bytes_per_pixel`` for the engine's tile planning.

Not part of the tests. Example::

    OMP_NUM_THREADS=2 python bench/stylize_memory.py --threads 2 --sizes 1024 2048 --max-memory 4GiB
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def smooth(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(size, size), mode="bicubic",
                                          align_corners=False)
    return (low + 0.1 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)


def signal_preserving_init(module: torch.nn.Module) -> None:
    """Re-draw random convolutions He-normal and scale the image-producing one to a 0.15 spread.

    PyTorch's default init shrinks signals through a deep VGG and decoder until the output is a flat
    near-black image whose ``detail`` is 0 whatever the resolution; with signal-preserving random
    weights the output carries the content's structure, so ``detail`` shows whether full-resolution
    detail survives. Memory and time do not depend on the values.
    """
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels > 3]
    if not convs:
        return
    with torch.no_grad():
        for conv in convs:
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            if conv.bias is not None:
                torch.nn.init.zeros_(conv.bias)
        last = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 3][-1]
        last.weight.mul_(0.02)
        if last.bias is not None:
            last.bias.fill_(0.5)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(name: str, size: int, max_memory: str, threads: int) -> dict[str, object]:
    torch.set_num_threads(threads)
    from nstzoo.registry import get_registry
    from nstzoo.stylize import Controls, Stylizer, parse_memory
    from nstzoo.weights import load_stylizer, weights_path

    spec = get_registry().stylizer(name)
    random = spec.needs_weights and not weights_path(name).is_file()
    module = load_stylizer(name, random_init=random)
    if random:
        signal_preserving_init(module)
    stylizer = Stylizer(name, module, spec.controls, max_memory=parse_memory(max_memory))
    content, style = smooth(size, 1), smooth(512, 2)
    calls = []
    with torch.inference_mode():
        before = rss_bytes()
        start = time.perf_counter()
        out = stylizer.stylize(content, [style], Controls(), progress=lambda done, total: calls.append(total))
        seconds = time.perf_counter() - start
        small = torch.nn.functional.interpolate(out, scale_factor=0.25, mode="bilinear", antialias=True)
        back = torch.nn.functional.interpolate(small, size=out.shape[-2:], mode="bilinear")
        detail = float((out - back).abs().mean())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"stylizer": name, "size": size, "seconds": seconds, "peak_rss": peak, "rss_before": before,
            "windows": calls[-1] if calls else 1, "detail": detail, "shape": list(out.shape[-2:]),
            "bytes_per_pixel": (peak - before) / (size * size), "random_weights": random}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--max-memory", default="4GiB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="stylizer names (default: all registered)")
    parser.add_argument("--calibrate", action="store_true", help="one untiled 512-px call each: bytes per pixel")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.only[0], args.sizes[0], args.max_memory, args.threads)))
        return
    from nstzoo.registry import get_registry

    names = args.only or list(get_registry().stylizers())
    sizes, budget = ([512], "1TiB") if args.calibrate else (args.sizes, args.max_memory)
    if not args.json:
        print(f"torch={torch.__version__} threads={args.threads} --max-memory {budget}")
        print(f"{'stylizer':<11}{'side':>6}{'peak RSS':>11}{'time':>9}{'windows':>9}{'detail':>9}{'bytes/px':>10}")
    for name in names:
        for size in sizes:
            proc = subprocess.run([sys.executable, __file__, "--child", "--only", name, "--sizes", str(size),
                                   "--max-memory", budget, "--threads", str(args.threads)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name:<11}{size:>6}  failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{name:<11}{size:>6}{row['peak_rss'] / 2**30:>9.2f}Gi{row['seconds']:>8.1f}s{row['windows']:>9}"
                      f"{row['detail']:>9.4f}{row['bytes_per_pixel']:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
