"""The learner through its commands: test set -> train -> export -> eval -> embed."""

from __future__ import annotations

import csv
import json

import numpy as np

from tests.learner.helpers import install_toy_registry, make_images
from tests.test_cli_core import run


def test_testset_train_export_eval_embed_round_trip(capsys, tmp_path):
    install_toy_registry()
    content, style = make_images(tmp_path, count=6)
    testset = tmp_path / "testset"
    code, out, err = run(capsys, "testset", "build", "--stylizers", "reinhard,patch-wct", "--content", str(content),
                         "--style", str(style), "--out", str(testset), "--styles", "3", "--contents", "2",
                         "--size", "32", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["stylized"], summary["made"]) == (12, 12)
    rows = list(csv.DictReader(open(testset / "manifest.csv")))
    assert len(rows) == 12 + 3 + 2
    assert {r["role"] for r in rows} == {"stylized", "style", "content"}

    # Interrupted build: a missing image is made again, the others are reused.
    (testset / "reinhard" / "s0001_c0001.png").unlink()
    code, out, _ = run(capsys, "testset", "build", "--stylizers", "reinhard,patch-wct", "--content", str(content),
                       "--style", str(style), "--out", str(testset), "--styles", "3", "--contents", "2",
                       "--size", "32", "--json")
    assert (json.loads(out)["made"], json.loads(out)["reused"]) == (1, 11)
    # Other settings into the same folder would mix stale images with new ones: refused.
    code, _, err = run(capsys, "testset", "build", "--stylizers", "reinhard", "--content", str(content),
                       "--style", str(style), "--out", str(testset), "--styles", "3", "--contents", "2", "--size", "40")
    assert code == 2 and "built with other size" in err

    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "--stylizers", "reinhard,patch-wct", "--encoder", "toy", "--content",
                         str(content), "--style", str(style), "--out", str(run_dir), "--steps", "2", "--batch-size", "4",
                         "--chunk-size", "3", "--set", "synth.size=32", "--set", "data.workers=0", "--set", "amp=false",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["encoder"] == str(run_dir / "encoder.safetensors")

    exported = tmp_path / "exported.safetensors"
    code, out, err = run(capsys, "export", str(run_dir), "-o", str(exported), "--json")
    assert code == 0, err and json.loads(out)["step"] == 2

    for weights in (exported, run_dir):
        code, out, err = run(capsys, "eval", "--weights", str(weights), "--testset", str(testset), "--workers", "0", "--json")
        assert code == 0, err
        result = json.loads(out)
        assert set(result["methods"]) == {"reinhard", "patch-wct"}
        for group in ("style", "content"):
            assert 0.0 <= result["mean"][group]["mAP"] <= 100.0
            assert set(result["mean"][group]) == {"mAP", "IR-1", "IR-5", "IR-10"}
    assert json.loads(out)["mean"] == result["mean"]

    code, out, err = run(capsys, "embed", "--weights", str(exported), "--input", str(testset / "style"), "--out",
                         str(tmp_path / "emb.npz"), "--workers", "0", "--json")
    assert code == 0, err
    data = np.load(tmp_path / "emb.npz")
    assert data["embeddings"].shape == (3, 16) and data["embeddings"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, rtol=1e-5)
    assert [p.split("/")[-1] for p in data["paths"]] == ["s0000.png", "s0001.png", "s0002.png"]

    # A corrupted image (one flipped bit in its data) in workers: skipped, counted, named; no traceback.
    broken = testset / "reinhard" / "s0001_c0001.png"
    data = bytearray(broken.read_bytes())
    data[len(data) // 2] ^= 0x10
    broken.write_bytes(bytes(data))
    code, out, err = run(capsys, "eval", "--weights", str(exported), "--testset", str(testset), "--workers", "2",
                         "--json")
    assert code == 0, err
    skipped = json.loads(out)["skipped"]
    assert len(skipped) == 1 and skipped[0]["path"].endswith("s0001_c0001.png") and "Traceback" not in err
    code, out, err = run(capsys, "embed", "--weights", str(exported), "--input", str(testset / "reinhard"), "--out",
                         str(tmp_path / "emb2.npz"), "--workers", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["count"] == 5 and "s0001_c0001.png" in json.loads(out)["skipped"][0]["path"]
    before = (tmp_path / "emb2.npz").read_bytes()
    code, _, err = run(capsys, "embed", "--weights", str(exported), "--input", str(testset / "style"), "--out",
                       str(tmp_path / "emb2.npz"))
    assert code == 2 and "--overwrite" in err and (tmp_path / "emb2.npz").read_bytes() == before


def test_train_with_unknown_stylizer_is_exit_2_with_hint(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--stylizers", "reinhard,sanett", "--content", str(tmp_path),
                       "--style", str(tmp_path), "--steps", "1")
    assert code == 2 and "unknown stylizer 'sanett'" in err and "did you mean 'sanet'" in err


def test_train_with_bad_config_key_is_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--set", "optim.learning_rate=1", "--steps", "1")
    assert code == 2 and "unknown config key 'optim.learning_rate'" in err
