"""Kill-safe training: SIGKILLs at random moments, then --resume, end bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from nstzoo.weights import load_safetensors
from tests.learner.helpers import make_images
from tests.learner.test_distributed import ROOT, train_args

STEPS = 14


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "nstzoo", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def wait_for_steps(proc: subprocess.Popen, run_dir: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while logged_steps(run_dir) < count:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.01)


def resume_flag(run_dir: Path) -> list[str]:
    return ["--resume"] if (run_dir / "checkpoints" / "last.pt").exists() else []


def test_sigkills_and_a_sigterm_then_resume_end_bit_identical(tmp_path):
    images = make_images(tmp_path, count=8)
    straight = tmp_path / "straight"
    proc = start(train_args(images, straight, STEPS))
    assert proc.wait(timeout=300) == 0, proc.communicate()[1][-2000:]

    run_dir, rng, kills = tmp_path / "killed", random.Random(20261127), 0
    # SIGKILLs at random moments: at start-up, mid-step, and (checkpoint_every=1) during checkpoint writes.
    while kills < 6:
        proc = start(train_args(images, run_dir, STEPS) + resume_flag(run_dir))
        if kills == 0:
            time.sleep(rng.uniform(0.5, 2.0))  # before training starts: nothing saved yet
        else:
            wait_for_steps(proc, run_dir, min(logged_steps(run_dir) + rng.randint(1, 2), STEPS - 2))
            time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1

    # Preemption: SIGTERM finishes the step in flight, writes a checkpoint and exits 143.
    proc = start(train_args(images, run_dir, STEPS) + resume_flag(run_dir))
    wait_for_steps(proc, run_dir, logged_steps(run_dir) + 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM" in err and "--resume" in err
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert saved == logged_steps(run_dir)

    proc = start(train_args(images, run_dir, STEPS) + ["--resume"])
    assert proc.wait(timeout=300) == 0, proc.communicate()[1][-2000:]

    a, b = load_safetensors(straight / "encoder.safetensors")[0], load_safetensors(run_dir / "encoder.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, STEPS + 1))
    losses = lambda d: [json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(run_dir) == losses(straight)
    leftovers = [p.name for p in run_dir.rglob("*.tmp")]
    assert leftovers == []
