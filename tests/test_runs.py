"""The run engine (nstzoo/runs.py): what both trainers rely on for their run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nstzoo.errors import ConfigError
from nstzoo.learner.config import build_train_config
from nstzoo.runs import CHECKPOINT, RunFolder, RunLocked, TrainingDiverged

CONFIG = {"steps": 3, "lr": 1e-3, "nested": {"a": 1}}


def opened(path: Path, resume: bool = False, config: dict = CONFIG) -> RunFolder:
    return RunFolder(path, "test", may_change=("steps",)).open(config, resume=resume, seed=0, device="cpu")


def checksums(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_with_foreign_files_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    before = checksums(tmp_path)
    with pytest.raises(ConfigError, match="notes.txt"):
        opened(tmp_path)
    assert checksums(tmp_path) == before


def test_a_run_that_never_checkpointed_may_start_again_without_duplicate_records(tmp_path):
    run = opened(tmp_path)
    with run.open_metrics() as log:
        run.log(log, {"step": 1, "loss": 1.0})
    run.close()
    with pytest.raises(ConfigError, match="before its first checkpoint") as info:
        opened(tmp_path, resume=True)
    assert "without --resume" in info.value.hint
    opened(tmp_path).close()  # a fresh start replaces it: nothing was saved
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_resume_names_the_differing_key_and_allows_declared_ones(tmp_path):
    run = opened(tmp_path)
    run.save_checkpoint(2, {"modules": {"w": torch.ones(2)}})
    run.close()
    with pytest.raises(ConfigError, match=r"nested\.a: run has 1, now 2"):
        opened(tmp_path, resume=True, config={**CONFIG, "nested": {"a": 2}})
    resumed = opened(tmp_path, resume=True, config={**CONFIG, "steps": 10})
    assert resumed.start_step == 2
    resumed.close()


def test_partial_metrics_line_and_records_past_the_checkpoint_are_dropped_on_resume(tmp_path):
    run = opened(tmp_path)
    run.save_checkpoint(2, {"modules": {}})
    run.close()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    opened(tmp_path, resume=True).close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    run = opened(tmp_path)
    run.save_checkpoint(1, {"modules": {"w": torch.randn(100)}})
    run.close()
    path = tmp_path / CHECKPOINT
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ConfigError, match="damaged or not a checkpoint") as info:
        opened(tmp_path, resume=True)
    assert str(path) in info.value.message


def test_non_finite_state_is_never_checkpointed(tmp_path):
    run = opened(tmp_path)
    run.save_checkpoint(1, {"modules": {"w": torch.ones(3)}})
    before = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(TrainingDiverged, match="non-finite") as info:
        run.save_checkpoint(2, {"modules": {"w": torch.tensor([1.0, float("nan"), 2.0])}})
    assert str(tmp_path / CHECKPOINT) in info.value.hint
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    run.close()


def test_divergence_hint_names_no_checkpoint_before_the_first(tmp_path):
    run = opened(tmp_path)
    assert "no checkpoint was written yet" in run.divergence_hint()
    run.close()


def test_orphan_temporaries_are_removed_on_start(tmp_path):
    run = opened(tmp_path)
    run.save_checkpoint(1, {"modules": {}})
    run.close()
    orphan = tmp_path / "checkpoints" / ".last.pt.1234.abcd1234.tmp"
    orphan.write_bytes(b"half a checkpoint")
    opened(tmp_path, resume=True).close()
    assert not orphan.exists() and (tmp_path / CHECKPOINT).exists()


def test_a_run_folder_is_locked_while_a_process_writes_to_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from nstzoo.runs import RunFolder\n"
        "RunFolder(%r, 'test').open({}, resume=False, seed=0, device='cpu')\n"
        "print('locked', flush=True); time.sleep(60)") % (str(Path(__file__).resolve().parents[1]), str(tmp_path))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match="in use by another nstzoo process"):
            RunFolder(tmp_path, "test").open({}, resume=True, seed=0, device="cpu")
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    with pytest.raises(ConfigError, match="before its first checkpoint"):  # the lock died with its process
        RunFolder(tmp_path, "test").open({}, resume=True, seed=0, device="cpu")


@pytest.mark.parametrize("override, key", [("optim.lr=inf", "optim.lr"), ("optim.lr=1e400", "optim.lr"),
                                           ("log_every=0", "log_every"), ("seed=99999999999999999999", "seed"),
                                           ("synth.weights={reinhard: 0, patch-wct: 0}", "synth.weights"),
                                           ("loss.temperature=nan", "loss.temperature")])
def test_impossible_learner_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_train_config([], [override, "synth.stylizers=[reinhard,patch-wct]"])
