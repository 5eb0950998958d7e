"""Peak memory and time of logit accumulation vs one full-batch backward.

A ViT-tiny (timm ``vit_tiny_patch16_224``, random init, small images) embeds a batch; the loss is
the ALADIN-NST SupCon loss over pairs of style ids. Each configuration runs in its own process so
that peak memory is measured cleanly: on CUDA, ``torch.cuda.max_memory_allocated`` above what the
model and batch already hold; on CPU, the growth of the process's peak resident set size
(``ru_maxrss``) during the steps, which includes allocator slack, so read it as an estimate.

    python bench/accumulate.py                       # CPU, batch 64, chunks 8 and 16
    python bench/accumulate.py --device cuda --batch 1024 --img-size 224 --chunks 64 128

This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _maxrss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> dict:
    import timm
    import torch

    from nstzoo.learner.accumulate import accumulated_step, split_into_chunks
    from nstzoo.learner.loss import SupConLoss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=args.img_size,
                              num_classes=args.dim, drop_rate=0.1).to(device).train()
    images = torch.rand(args.batch, 3, args.img_size, args.img_size, device=device)
    labels = torch.arange(args.batch, device=device) // 2
    loss_mod = SupConLoss(temperature=0.1)
    loss_fn = lambda e: loss_mod(e, labels)  # noqa: E731

    def step() -> None:
        model.zero_grad(set_to_none=False)
        if args.chunk == 0:
            loss_fn(model(images)).backward()
        else:
            accumulated_step(model, split_into_chunks(images, args.chunk), loss_fn)  # -> (loss, embeddings, auxiliary)

    # Gradient buffers are allocated by the first backward in both modes; allocate them before the
    # baseline so the figure is activation memory only.
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _maxrss_mib()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _maxrss_mib() - base
    # The first step warms kernels and the allocator; report the median of the rest when there are any.
    timed = times[1:] if len(times) > 1 else times
    return {"chunk": args.chunk, "peak_mib": peak, "step_s": statistics.median(timed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--chunks", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args()

    if args.chunk is not None:
        print(json.dumps(worker(args)))
        return

    common = ["--device", args.device, "--batch", str(args.batch), "--img-size", str(args.img_size),
              "--dim", str(args.dim), "--steps", str(args.steps), "--threads", str(args.threads)]
    rows = []
    for chunk in [0, *args.chunks]:
        out = subprocess.run([sys.executable, __file__, *common, "--chunk", str(chunk)],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    full = rows[0]
    print(f"vit_tiny_patch16_224 @ {args.img_size}px, batch {args.batch}, device {args.device}, "
          f"threads {args.threads}, median of {max(args.steps - 1, 1)} step(s)")
    print(f"{'mode':<22}{'peak MiB':>10}{'vs full':>9}{'step s':>9}{'vs full':>9}")
    for r in rows:
        mode = "full-batch backward" if r["chunk"] == 0 else f"accumulate, chunk {r['chunk']}"
        print(f"{mode:<22}{r['peak_mib']:>10.1f}{r['peak_mib'] / full['peak_mib']:>8.2f}x"
              f"{r['step_s']:>9.3f}{r['step_s'] / full['step_s']:>8.2f}x")


if __name__ == "__main__":
    main()
