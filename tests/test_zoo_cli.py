"""The VGG-based stylizers through the command line: train one, stylize with it, learn with them."""

from __future__ import annotations

import json

import pytest

from tests.learner.helpers import install_toy_registry, make_images
from tests.test_cli_core import run


def test_stylizers_train_adain_then_stylize_with_the_export(capsys, tmp_path):
    content, style = make_images(tmp_path, count=4)
    out = tmp_path / "adain-run"
    code, _, err = run(capsys, "stylizers", "train", "adain", "--content", str(content), "--style", str(style),
                       "--out", str(out), "--steps", "2", "--batch-size", "2", "--size", "32", "--random-init-vgg",
                       "--device", "cpu", "--install")
    assert code == 0, err
    exported = out / "adain.safetensors"
    assert exported.is_file()
    listed = {r["name"]: r for r in json.loads(run(capsys, "stylizers", "list", "--json")[1])}
    assert listed["adain"]["weights"] == "ready"  # --install put it in the store
    code, out_json, err = run(capsys, "stylize", "-s", "adain", "--content", str(content / "content_00000.png"),
                              "--style", str(style / "style_00001.png"), "-o", str(tmp_path / "o.png"),
                              "--size", "40", "--json")
    assert code == 0, err
    assert json.loads(out_json)["size"] == [40, 40]
    code, _, err = run(capsys, "stylizers", "train", "reinhard", "--content", str(content), "--style", str(style),
                       "--out", str(tmp_path / "x"))
    assert code == 2 and "cannot be trained" in err


@pytest.mark.parametrize("method", ["pama", "neat"])
def test_trained_pama_and_neat_exports_stylize_through_the_cli(capsys, tmp_path, method):
    content, style = make_images(tmp_path, count=3)
    out = tmp_path / f"{method}-run"
    code, _, err = run(capsys, "stylizers", "train", method, "--content", str(content), "--style", str(style),
                       "--out", str(out), "--steps", "1", "--batch-size", "2", "--size", "32", "--random-init-vgg",
                       "--device", "cpu")
    assert code == 0, err
    code, out_json, err = run(capsys, "stylize", "-s", method, "--weights", str(out / f"{method}.safetensors"),
                              "--content", str(content / "content_00000.png"), "--style",
                              str(style / "style_00001.png"), "-o", str(tmp_path / "o.png"), "--size", "48", "--json")
    assert code == 0, err
    assert json.loads(out_json)["size"] == [48, 48]


@pytest.mark.parametrize("stylizers", ["sanet,adain,cast", "neat,pama"])
def test_learner_runs_end_to_end_with_random_init_stylizers(capsys, tmp_path, stylizers):
    install_toy_registry()
    content, style = make_images(tmp_path, count=6)
    refused = run(capsys, "train", "--stylizers", stylizers, "--encoder", "toy", "--content", str(content),
                  "--style", str(style), "--out", str(tmp_path / "refused"), "--steps", "1")
    assert refused[0] == 2 and "needs weights" in refused[2] and "--random-init" in refused[2]
    code, out, err = run(capsys, "train", "--stylizers", stylizers, "--random-init", "--encoder", "toy",
                         "--content", str(content), "--style", str(style), "--out", str(tmp_path / "run"),
                         "--steps", "1", "--batch-size", "6", "--chunk-size", "9", "--set", "synth.size=32",
                         "--set", "data.workers=0", "--set", "amp=false", "--json")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(record["methods"]) == set(stylizers.split(",")) and sum(record["methods"].values()) == 6
    assert record["loss"] > 0 and json.loads(out)["final_loss"] == record["loss"]
