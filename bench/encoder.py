"""Time the default aladin-nst encoder: forward and forward+backward per batch, fp32 vs bf16 autocast.

Default architecture (ViT-B/16 at 224 + VGG-19 taps relu1_1..relu5_1 at 256, linear projection to
1024-D), random weights, input batch ``[B,3,256,256]`` in [0, 1]. The VGG is frozen, so backward
runs through the ViT, the moment LayerNorm and the projection only. Figures are wall-clock medians
over ``--iters`` runs after ``--warmup`` runs; this is a benchmark, not a test.

    python bench/encoder.py                       # CPU, batch 8 (bf16 is emulated on CPUs without
                                                  # AVX512-BF16/AMX and then slower than fp32)
    python bench/encoder.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from nstzoo.encoders.aladin_nst import AladinNST


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(enc: AladinNST, x: torch.Tensor, *, bf16: bool, backward: bool, warmup: int, iters: int) -> float:
    """Median seconds of one forward (and backward) pass."""
    times = []
    for i in range(warmup + iters):
        _sync(x.device)
        start = time.perf_counter()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            if backward:
                out = enc(x)
            else:
                with torch.no_grad():
                    out = enc(x)
        if backward:
            # A loss that touches every output coordinate, like a contrastive loss does.
            (out @ torch.randn(out.shape[1], device=x.device)).square().sum().backward()
            enc.zero_grad(set_to_none=True)
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="input side; the encoder resizes per branch")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    enc = AladinNST(random_init=True).to(device).train()
    trainable = sum(p.numel() for p in enc.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in enc.parameters() if not p.requires_grad)
    print(f"aladin-nst default: in_dim {enc.in_dim} -> {enc.embed_dim}; {trainable / 1e6:.1f}M trainable, "
          f"{frozen / 1e6:.1f}M frozen (VGG); device {device}, torch threads {torch.get_num_threads()}, "
          f"batch {args.batch} x 3 x {args.size} x {args.size}, median of {args.iters} after {args.warmup} warm-up")
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    print(f"{'precision':32s} {'forward s/batch':>16s} {'fwd+bwd s/batch':>16s} {'fwd+bwd img/s':>14s}", flush=True)
    for label, bf16, channels_last in (("fp32", False, False), ("bf16 autocast + channels_last", True, True)):
        if channels_last:
            enc = enc.to(memory_format=torch.channels_last)
            inp = x.contiguous(memory_format=torch.channels_last)
        else:
            inp = x
        fwd = measure(enc, inp, bf16=bf16, backward=False, warmup=args.warmup, iters=args.iters)
        fwd_bwd = measure(enc, inp, bf16=bf16, backward=True, warmup=args.warmup, iters=args.iters)
        print(f"{label:32s} {fwd:16.3f} {fwd_bwd:16.3f} {args.batch / fwd_bwd:14.2f}", flush=True)


if __name__ == "__main__":
    main()
