"""`nstzoo ablate`: train per experiment, one test set per method, the table in three formats; skip and resume."""

from __future__ import annotations

import csv
import io
import json

import pytest

from nstzoo.errors import ConfigError
from nstzoo.eval.ablate import build_experiments, load_profile
from tests.eval.helpers import experiment_configs, tiny_profile
from tests.learner.helpers import install_toy_registry
from tests.test_cli_core import run


@pytest.fixture(autouse=True)
def toy(private_store):
    install_toy_registry()


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_ablate_writes_the_table_then_skips_finished_experiments(capsys, tmp_path):
    profile = tiny_profile(tmp_path / "tiny.yaml")
    configs = experiment_configs(tmp_path / "exp", {"neat+warm": {"synth": {"stylizers": ["neat"]},
                                                                  "loss": {"temperature": 0.2}},
                                                    "neat": {"synth": {"stylizers": ["neat"]},
                                                             "out": "runs/ignored"}})
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "ablate", *map(str, configs), "--profile", str(profile), "--out", str(out),
                            "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert [e["name"] for e in doc["experiments"]] == ["neat+warm", "neat"]  # same length: order given
    assert [e["status"] for e in doc["experiments"]] == ["trained", "trained"]
    assert [e["stylizers"] for e in doc["experiments"]] == [["reinhard"], ["reinhard"]]
    assert [(c["key"], c["group"], c["label"]) for c in doc["columns"]] == [
        ("reinhard", "train", "neat (reinhard)"), ("average", "average", "average"),
        ("patch-wct", "held-out", "cast (patch-wct)")]
    for exp in doc["experiments"]:
        assert exp["run_dir"] == str(out / exp["name"]) and exp["step"] == 2  # the fragment's out: is replaced
        assert set(exp["results"]) == {"reinhard", "patch-wct"}
        for values in exp["table"].values():
            assert set(values) == {"style mAP", "style IR-1", "content mAP"}
            assert all(0.0 <= v <= 100.0 for v in values.values())
        # One training method: the average is that method's column.
        assert exp["table"]["average"] == exp["table"]["reinhard"]
        assert exp["results"]["patch-wct"]["style"]["mAP"] == exp["table"]["patch-wct"]["style mAP"]
    assert sorted(p.name for p in (out / "testsets").iterdir()) == ["patch-wct", "reinhard"]

    rows = list(csv.reader(io.StringIO((out / "ablation.csv").read_text())))
    assert rows[0][:5] == ["experiment", "trained on", "neat (reinhard) style mAP", "neat (reinhard) style IR-1",
                           "neat (reinhard) content mAP"]
    assert [r[0] for r in rows[1:]] == ["neat+warm", "neat"] and len(rows[1]) == 2 + 3 * 3
    assert float(rows[2][2]) == pytest.approx(doc["experiments"][1]["table"]["reinhard"]["style mAP"], abs=1e-4)
    markdown = (out / "ablation.md").read_text()
    assert "Table 1 — training-signal ablation (tiny profile)" in markdown and "| neat | reinhard |" in markdown
    assert "neat -> reinhard" in markdown and "cast -> patch-wct" in markdown
    assert json.loads((out / "ablation.json").read_text())["experiments"][0]["table"] == doc["experiments"][0]["table"]

    # Rerun: nothing is trained again (checkpoints and logs untouched), evaluations come from the cache.
    stamps = {e["name"]: (out / e["name"] / "checkpoints" / "last.pt").stat().st_mtime_ns for e in doc["experiments"]}
    logs = {e["name"]: (out / e["name"] / "metrics.jsonl").read_text() for e in doc["experiments"]}
    code, stdout, err = run(capsys, "ablate", *map(str, configs), "--profile", str(profile), "--out", str(out))
    assert code == 0, err
    assert "neat: finished earlier (step 2), skipped" in err
    assert {n: (out / n / "checkpoints" / "last.pt").stat().st_mtime_ns for n in stamps} == stamps
    assert {n: (out / n / "metrics.jsonl").read_text() for n in logs} == logs
    assert "Table 1" in stdout and "neat (reinhard)" in stdout and "c-mAP" in stdout  # the table on stdout
    again = json.loads((out / "ablation.json").read_text())
    assert [e["table"] for e in again["experiments"]] == [e["table"] for e in doc["experiments"]]

    # Other settings into the same folder would put stale numbers in the table: refused, naming the key.
    code, _, err = run(capsys, "ablate", *map(str, configs), "--profile", str(profile), "--out", str(out),
                       "--set", "optim.lr=0.5")
    assert code == 2 and "holds a run with other settings" in err and "optim.lr" in err


def test_interrupted_experiment_resumes_and_more_steps_extend_it(capsys, tmp_path):
    profile = tiny_profile(tmp_path / "tiny.yaml", steps=1)
    configs = experiment_configs(tmp_path / "exp", {"neat": {"synth": {"stylizers": ["neat"]}}})
    out = tmp_path / "out"
    args = ["ablate", str(configs[0]), "--profile", str(profile), "--out", str(out), "--json"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    # A kill after the checkpoint of step 1, before the export: the rerun (with more steps) resumes.
    (out / "neat" / "encoder.safetensors").unlink()
    code, stdout, err = run(capsys, *args, "--set", "steps=3")
    assert code == 0, err
    exp = json.loads(stdout)["experiments"][0]
    assert (exp["status"], exp["step"]) == ("resumed", 3)
    assert [r["step"] for r in _records(out / "neat")] == [1, 2, 3]
    assert json.loads((out / "neat" / "meta.json").read_text())["resumed_from"] == 1
    # A finished run with fewer steps than asked is extended, not retrained.
    code, stdout, err = run(capsys, *args, "--set", "steps=4")
    assert code == 0, err
    assert json.loads(stdout)["experiments"][0]["status"] == "resumed"
    assert [r["step"] for r in _records(out / "neat")] == [1, 2, 3, 4]


def test_profiles_and_config_errors(capsys, tmp_path):
    quick = load_profile("quick")
    assert quick.stand_ins == {"neat": "ghiasi", "pama": "patch-wct", "sanet": "reinhard", "cast": "dumoulin"}
    assert quick.held_out == ["cast"] and quick.train["steps"] == 40
    paper = load_profile("paper")
    assert paper.base == "configs/paper.yaml" and paper.stand_ins == {} and paper.testset.styles == 400

    # The shipped fragments under the quick profile: Table 1's seven rows, stylizers mapped, in order.
    from pathlib import Path

    shipped = sorted((Path(__file__).resolve().parents[2] / "configs" / "ablations").glob("*.yaml"))
    experiments = build_experiments(shipped, quick, tmp_path, base=None, data={"content": ["c"], "style": ["s"]},
                                    log=lambda _: None)
    assert [e.name for e in experiments] == ["neat", "pama", "sanet", "neat+pama", "neat+sanet", "pama+sanet",
                                             "neat+pama+sanet"]
    assert experiments[-1].stylizers == ["ghiasi", "patch-wct", "reinhard"]
    assert {e.config.steps for e in experiments} == {40}
    assert all(e.run_dir == tmp_path / e.name for e in experiments)

    code, _, err = run(capsys, "ablate", str(shipped[0]), "--profile", "fast")
    assert code == 2 and "not a built-in profile" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth: {stylizers: [neat]}\noptim: {learning_rate: 1}\n")
    code, _, err = run(capsys, "ablate", str(bad), "--profile", "quick", "--out", str(tmp_path / "o"))
    assert code == 2 and "experiment bad" in err and "unknown config key 'optim.learning_rate'" in err
    code, _, err = run(capsys, "ablate", str(shipped[0]), "--out", str(tmp_path / "p"), "--base",
                       str(tmp_path / "missing.yaml"))
    assert code == 2 and "base config" in err and "missing.yaml" in err
    twins = experiment_configs(tmp_path / "a", {"x": {}}) + experiment_configs(tmp_path / "b", {"x": {}})
    with pytest.raises(ConfigError, match="share the name 'x'"):
        build_experiments(twins, quick, tmp_path, base=None, data={"content": ["c"], "style": ["s"]}, log=print)
