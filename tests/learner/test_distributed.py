"""torchrun (2 processes, gloo on CPU) trains the same encoder as one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nstzoo.weights import load_safetensors
from tests.learner.helpers import make_images

ROOT = Path(__file__).resolve().parents[2]
TINY_ENCODER = ("encoder.options={vit_model: vit_tiny_patch16_224, vit_size: 32, vit_kwargs: {depth: 1, "
                "embed_dim: 32, num_heads: 2}, vgg: normalised-vgg19, vgg_size: 32, embed_dim: 32, random_init: true}")


def train_args(images: tuple[Path, Path], out: Path, steps: int) -> list[str]:
    content, style = images
    return ["train", "--stylizers", "reinhard,patch-wct", "--content", str(content), "--style", str(style),
            "--out", str(out), "--steps", str(steps), "--batch-size", "8", "--chunk-size", "4", "--device", "cpu",
            "--set", "synth.size=32", "--set", "data.workers=0", "--set", "amp=false", "--set", "optim.lr=1e-3",
            "--set", "checkpoint_every=1", "--set", TINY_ENCODER]


def run(args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    proc = subprocess.run([*launcher, "-m", "nstzoo", *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("dist"), count=8)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_safetensors(run_dir / "encoder.safetensors")[0]


def test_two_processes_equal_one_process_and_resume_into_one(images, tmp_path):
    run(train_args(images, tmp_path / "single", 3))
    run(train_args(images, tmp_path / "ddp", 3), processes=2)
    single, ddp = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    # Tolerance: the all-reduce sums gradients in another order (fp32 rounding ~1e-7 relative) and the
    # loss sees the same rows in another order (it is permutation invariant); three Adam steps at
    # lr 1e-3 carry that as ~1e-7 relative changes. A wrong algorithm (each rank's own loss, a mean
    # instead of a sum, dropped negatives) moves weights by ~lr = 1e-3.
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=0, atol=2e-5, msg=key)
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]  # rank 0 alone writes
    singles = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(records, singles):
        assert abs(a["loss"] - b["loss"]) < 1e-5
    assert json.loads((tmp_path / "ddp" / "meta.json").read_text())["world_size"] == 2

    # A 2-process checkpoint continues in 1 process, and ends where 5 single-process steps end.
    run(train_args(images, tmp_path / "ddp", 5) + ["--resume"])
    run(train_args(images, tmp_path / "single", 5) + ["--resume"])
    resumed, straight = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=5e-5, msg=key)
