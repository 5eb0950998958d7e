"""Training-step throughput and peak memory of the ALADIN-NST learner, end to end through `nstzoo train`.

Each configuration is a real `nstzoo train` run (data path, synthesizer, encoder, SupCon, logit
accumulation, optimizer, checkpoints) in its own process (or torchrun group), so peak memory is
measured cleanly: the peak resident set of every process of the run (``ru_maxrss`` of the
children), and on CUDA ``torch.cuda.max_memory_allocated``. Samples/s is the global stylized+style
images per second over the steps after the first (warm-up), from ``metrics.jsonl``.

    python bench/train_step.py                         # small profile on CPU: accumulation on/off, 1 vs 2 processes
    python bench/train_step.py --profile paper --device cuda --steps 5   # the paper configuration on a GPU
    python bench/train_step.py --data-path             # host memory of one step's batch: uint8 per sample vs float32 per step

The paper configuration (ViT-B/16 at 224 + VGG-19 at 256, stylization at 512, batch 1024 through
chunks of 32, bf16) needs a GPU; on a CUDA device the script also counts the encoder's FLOPs per
step with ``torch.utils.flop_counter.FlopCounterMode`` and reports the fraction of the GPU's bf16
peak (``--peak-tflops``, 989 for an H100 SXM dense bf16) that the step reaches. This prints figures;
it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY = ("encoder.options={vit_model: vit_tiny_patch16_224, vit_size: 64, vit_kwargs: {depth: 4, embed_dim: 96, "
        "num_heads: 3}, vgg: normalised-vgg19, vgg_size: 64, embed_dim: 256, random_init: true}")
PAPER = ("encoder.options={vit_model: vit_base_patch16_224, vit_size: 224, vgg: vgg19, vgg_size: 256, "
         "embed_dim: 1024, random_init: true}")


def make_data(root: Path, count: int, size: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT))
    from nstzoo.data.generate import generate_folder

    content, style = root / "content", root / "style"
    if not content.exists():
        generate_folder("content", count, size, 0, content)
        generate_folder("style", count, size, 1, style)
    return content, style


def run_config(name: str, data: tuple[Path, Path], out: Path, *, processes: int, batch: int, chunk: int, size: int,
               steps: int, workers: int, device: str, encoder: str, stylizers: str) -> dict:
    content, style = data
    args = ["train", "--stylizers", stylizers, "--content", str(content), "--style", str(style),
            "--out", str(out / name), "--steps", str(steps), "--batch-size", str(batch), "--chunk-size", str(chunk),
            "--device", device, "--set", f"synth.size={size}", "--set", f"data.workers={workers}",
            "--set", "synth.random_init=true", "--set", f"checkpoint_every={steps}", "--set", encoder]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run([*launcher, "-m", "nstzoo", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"config": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}
    records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    timed = records[1:] or records
    images_per_step = batch + batch // 2
    seconds = sum(r["seconds"] for r in timed)
    # ru_maxrss of children is the largest single child's peak (KiB on Linux).
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return {"config": name, "processes": processes, "batch": batch, "chunk": chunk, "size": size,
            "samples_per_s": round(images_per_step * len(timed) / seconds, 2), "step_s": round(seconds / len(timed), 3),
            "peak_rss_mib_per_process": round(peak), "wall_s": round(wall, 1)}


def isolated(name: str, data: tuple[Path, Path], out: Path, **kwargs) -> dict:
    """``run_config`` in a fresh process, so the children's peak RSS belongs to this configuration alone."""
    spec = json.dumps({"name": name, "data": [str(p) for p in data], "out": str(out), **kwargs})
    proc = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"config": name, "error": proc.stderr[-500:]}


def measure_data_path(data: tuple[Path, Path], batch: int, size: int, workers: int, mode: str) -> dict:
    """Peak RSS (this process and its workers) and seconds per step of decoding ``batch`` steps' images.

    ``mode="float32-step"`` decodes a whole step serially into one float32 tensor (the data path before);
    ``mode="uint8-samples"`` runs the current loader (per-sample decoding in ``workers`` processes, uint8).
    """
    import torch

    sys.path.insert(0, str(ROOT))
    from nstzoo.data.folder import list_images
    from nstzoo.data.steps import StepBatches, step_loader

    batches = StepBatches(list_images(data[0]), list_images(data[1]), batch, size, seed=0)
    started = time.perf_counter()
    steps = 2
    if mode == "float32-step":
        for step in range(steps):
            b = batches.batch(step)
            as_float = torch.cat([b["contents"], b["styles"]]).float().div_(255)  # what one step held before
            del b, as_float
    else:
        for _ in step_loader(batches, 0, steps, workers):
            pass
    seconds = (time.perf_counter() - started) / steps
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"mode": mode, "batch": batch, "size": size, "workers": workers, "s_per_step": round(seconds, 2),
            "images_per_s": round(1.5 * batch / seconds, 1), "peak_rss_mib_main": round(own),
            "peak_rss_mib_largest_worker": round(kids)}


def startup_from_shards(count: int) -> None:
    """Seconds from ``nstzoo train`` start to its first step over ``count`` images in shards vs in a folder.

    Images are tiny (32 px PNGs) so writing them is quick; what is measured is what grows with the number of
    images before the first step: listing a folder vs reading a shard index.
    """
    import io

    import numpy as np
    import webdataset
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards, folder = tmp / "shards", tmp / "folder"
        shards.mkdir()
        folder.mkdir()
        pngs = []
        for seed in range(64):
            buf = io.BytesIO()
            Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
            pngs.append(buf.getvalue())
        shard_size = 1000
        with webdataset.ShardWriter(str(shards / "shard-%06d.tar"), maxcount=shard_size, verbose=0, encoder=False,
                                    mtime=0) as writer:
            for i in range(count):
                meta = json.dumps({"folder": "bench", "path": f"img{i}.png", "index": i}).encode()
                writer.write({"__key__": f"{i:010d}", "png": pngs[i % 64], "json": meta})
                (folder / f"img{i:07d}.png").write_bytes(pngs[i % 64])
        counts = [min(shard_size, count - s) for s in range(0, count, shard_size)]
        (shards / "shards.json").write_text(json.dumps({
            "wids_version": 1, "nstzoo": {"key_digits": 10},
            "shardlist": [{"url": f"shard-{k:06d}.tar", "nsamples": n} for k, n in enumerate(counts)]}))
        for name, data in (("shards", shards), ("folder", folder)):
            args = ["train", "--stylizers", "reinhard", "--content", str(data), "--style", str(data),
                    "--out", str(tmp / f"run-{name}"), "--steps", "1", "--batch-size", "4", "--chunk-size", "6",
                    "--device", "cpu", "--set", "synth.size=32", "--set", "data.workers=0", "--set", "amp=false",
                    "--set", "encoder.options={vit_model: vit_tiny_patch16_224, vit_size: 32, vit_kwargs: {depth: 1, "
                    "embed_dim: 32, num_heads: 2}, vgg: normalised-vgg19, vgg_size: 32, embed_dim: 32, random_init: true}"]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "nstzoo", *args], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            step_s = json.loads((tmp / f"run-{name}" / "metrics.jsonl").read_text().splitlines()[0])["seconds"] \
                if proc.returncode == 0 else float("nan")
            print(json.dumps({"source": name, "images": count, "rc": proc.returncode,
                              "wall_s_to_end_of_step_1": round(wall, 1), "step_s": step_s}))


def data_path_memory(batch: int, size: int) -> None:
    """Bytes of one step's decoded batch: the old path (float32, whole step per worker) vs uint8 per sample."""
    images = batch + batch // 2
    per_sample_u8 = 3 * size * size
    print(f"one step at batch {batch}, {size} px: {images} images")
    print(f"  float32 step (before): {images * per_sample_u8 * 4 / 2**30:.2f} GiB per step in flight; "
          f"x 8 workers x prefetch 2 = {16 * images * per_sample_u8 * 4 / 2**30:.1f} GiB")
    for workers in (1, 8):
        inflight = workers * 4 * per_sample_u8 + 2 * images * per_sample_u8
        print(f"  uint8 per sample (now), {workers} workers x prefetch 4: {inflight / 2**30:.2f} GiB "
              "(samples in flight + the step being assembled + the step being trained)")


def flops_on_cuda(batch: int, chunk: int, peak_tflops: float, step_s: float) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(ROOT))
    from nstzoo.encoders.aladin_nst import AladinNST

    model = AladinNST(vit_model="vit_base_patch16_224", vgg="vgg19", random_init=True).cuda().train()
    x = torch.rand(chunk, 3, 512, 512, device="cuda")
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cuda", dtype=torch.bfloat16):
        model(x).sum().backward()
    # Logit accumulation: one no-grad forward (~1/3 of fwd+bwd) plus one fwd+bwd per chunk.
    per_step = counter.get_total_flops() * (batch + batch // 2) / chunk * (4 / 3)
    print(f"encoder FLOPs per step: {per_step / 1e12:.1f} TFLOP; at {step_s:.2f} s/step: "
          f"{per_step / step_s / 1e12:.0f} TFLOP/s = {100 * per_step / step_s / 1e12 / peak_tflops:.1f}% of "
          f"{peak_tflops:.0f} TFLOP/s bf16 peak (stylizers not counted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["small", "paper"], default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--data-path", action="store_true", help="host memory of one step: before vs now (measured)")
    parser.add_argument("--startup", type=int, metavar="N", help="time to the first step over N images: shards vs folder")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--measure-data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_data:
        spec = json.loads(args.measure_data)
        print(json.dumps(measure_data_path(tuple(Path(p) for p in spec.pop("data")), **spec)))
        return
    if args.worker:
        spec = json.loads(args.worker)
        name, data, out = spec.pop("name"), tuple(Path(p) for p in spec.pop("data")), Path(spec.pop("out"))
        print(json.dumps(run_config(name, data, out, **spec)))
        return
    if args.startup:
        startup_from_shards(args.startup)
        return
    if args.data_path:
        data_path_memory(1024, 512)
        with tempfile.TemporaryDirectory() as tmp:
            data = make_data(Path(tmp) / "data", 256, 576)
            for mode, workers in (("float32-step", 0), ("uint8-samples", 0), ("uint8-samples", 2)):
                spec = json.dumps({"data": [str(p) for p in data], "batch": 1024, "size": 512, "workers": workers,
                                   "mode": mode})
                proc = subprocess.run([sys.executable, __file__, "--measure-data", spec], capture_output=True, text=True)
                print(proc.stdout.strip() or proc.stderr[-500:])
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.profile == "small":
            data = make_data(tmp / "data", 64, 96)
            common = dict(size=64, steps=args.steps, workers=1, device=args.device, encoder=TINY,
                          stylizers="reinhard,patch-wct")
            rows = [isolated("full-batch", data, tmp, processes=1, batch=32, chunk=48, **common),
                    isolated("chunks-of-12", data, tmp, processes=1, batch=32, chunk=12, **common),
                    isolated("2-processes-chunks-of-12", data, tmp, processes=2, batch=32, chunk=12, **common)]
        else:
            data = make_data(tmp / "data", 2048, 576)
            rows = [isolated("paper", data, tmp, processes=1, batch=1024, chunk=32, size=512, steps=args.steps,
                               workers=8, device=args.device, encoder=PAPER, stylizers="reinhard,patch-wct")]
        for row in rows:
            print(json.dumps(row))
        if args.profile == "paper" and args.device.startswith("cuda") and "step_s" in rows[0]:
            flops_on_cuda(1024, 32, args.peak_tflops, rows[0]["step_s"])


if __name__ == "__main__":
    main()
