"""`nstzoo report`: one self-contained page per ablation, compare or run folder, checked in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

from tests.browser import render
from tests.eval.helpers import build_small_testset, experiment_configs, tiny_profile
from tests.learner.helpers import install_toy_registry
from tests.test_cli_core import run

SECTIONS = ["summary", "tables", "results", "training", "stylizations", "retrieval", "config"]


def _check_page(page: Path):
    rendered = render(page)
    assert rendered.sections == SECTIONS
    assert rendered.all_images_loaded, rendered.broken_images()
    # self-contained: every picture is inside the page
    assert all(i["src"].startswith(("data:image/jpeg;base64,", "data:image/svg+xml;base64,")) for i in rendered.images)
    plots = {i["section"] for i in rendered.images if i["src"].startswith("data:image/svg+xml")}
    return rendered, plots


def test_ablation_report_renders_in_chromium(capsys, tmp_path):
    install_toy_registry()
    profile = tiny_profile(tmp_path / "tiny.yaml", steps=3)
    # A name that HTML would read as markup, if it were not escaped.
    configs = experiment_configs(tmp_path / "exp", {"neat": {"synth": {"stylizers": ["neat"]}},
                                                    "a&b<i>": {"synth": {"stylizers": ["neat"]},
                                                               "loss": {"temperature": 0.2}}})
    out = tmp_path / "abl"
    code, _, err = run(capsys, "ablate", *map(str, configs), "--profile", str(profile), "--out", str(out), "--json")
    assert code == 0, err

    code, stdout, err = run(capsys, "report", str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout) == {"report": str(out / "report.html"), "kind": "ablation", "source": str(out)}
    rendered, plots = _check_page(out / "report.html")
    assert plots == {"results", "training"}
    # 2 methods (reinhard, held-out patch-wct) x (4 styles + 3 contents + 4 x 3 stylizations)
    assert len(rendered.images_in("stylizations")) == 2 * (4 + 3 + 12)
    # 2 experiments x 2 methods x 2 queries x (query + top 6)
    assert len(rendered.images_in("retrieval")) == 2 * 2 * 2 * 7
    assert 'class="hit correct' in rendered.dom and "✓" in rendered.dom
    assert "Table 1 — training-signal ablation (tiny profile)" in rendered.dom
    assert "a&amp;b&lt;i&gt;" in rendered.dom and "<i>" not in rendered.dom
    assert rendered.dom.count("<details>") == 2  # each run's config.yaml

    # A page the command wrote is replaced on the next run; any other file is not.
    code, _, err = run(capsys, "report", str(out))
    assert code == 0, err
    other = tmp_path / "notes.html"
    other.write_text("<p>mine</p>")
    code, _, err = run(capsys, "report", str(out), "-o", str(other))
    assert code == 2 and "already exists" in err and other.read_text() == "<p>mine</p>"


def test_compare_and_run_folder_reports(capsys, tmp_path):
    install_toy_registry()
    testset = build_small_testset(tmp_path)
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "--stylizers", "reinhard,patch-wct", "--encoder", "toy", "--content",
                       str(tmp_path / "src" / "content"), "--style", str(tmp_path / "src" / "style"), "--out",
                       str(run_dir), "--steps", "3", "--batch-size", "4", "--chunk-size", "4", "--set", "synth.size=32",
                       "--set", "data.workers=0", "--set", "amp=false")
    assert code == 0, err
    compare_dir = tmp_path / "cmp"
    code, _, err = run(capsys, "compare", "--encoders", f"ours={run_dir},color-hist", "--testset", str(testset),
                       "--out", str(compare_dir), "--queries", "3")
    assert code == 0, err

    code, _, err = run(capsys, "report", str(compare_dir))
    assert code == 0, err
    rendered, plots = _check_page(compare_dir / "report.html")
    assert plots == {"results", "training"}  # the run entry brings its training curves
    assert "Table 2 — style retrieval" in rendered.dom and "Table 3 — content retrieval" in rendered.dom
    assert len(rendered.images_in("retrieval")) == 2 * 2 * 2 * 7  # --queries 2 (default) of the 3 stored
    assert len(rendered.images_in("stylizations")) == 2 * (4 + 3 + 12)

    page = tmp_path / "run.html"
    code, _, err = run(capsys, "report", str(run_dir), "--testset", str(testset), "-o", str(page))
    assert code == 0, err
    rendered, plots = _check_page(page)
    assert plots == {"training"}
    assert f"Retrieval on {testset}" in rendered.dom and len(rendered.images_in("retrieval")) == 2 * 2 * 7

    code, _, err = run(capsys, "report", str(tmp_path / "src"))
    assert code == 2 and "is not a run folder" in err


def test_quickstart_shows_its_floors_and_ends_with_its_report(capsys, tmp_path):
    """The quickstart chain at toy scale: floors as table rows and in summary.json, then report.html."""
    out = tmp_path / "qs"
    settings = ["quickstart.train_contents=4", "quickstart.train_styles=6", "quickstart.test_contents=2",
                "quickstart.test_styles=3", "quickstart.image_size=32", "quickstart.testset_size=32",
                "quickstart.real_test_photos=1", "quickstart.stylizers=[reinhard]",
                "quickstart.floors=[{name: color-hist, options: {bins: 4}}, {name: vgg-gram, options: "
                "{vgg: vgg16-hed, stat: mean-std, size: 32, taps: [relu1_1]}}]",
                "train.steps=2", "train.batch_size=4", "train.chunk_size=8", "train.synth.size=32", "train.amp=false"]
    code, stdout, err = run(capsys, "quickstart", "--out", str(out), *[a for s in settings for a in ("--set", s)])
    assert code == 0, err
    rows = {line.split("│")[1].strip(): line for line in stdout.splitlines() if line.count("│") == 6}
    assert {"untrained", "trained", "color-hist (floor)", "vgg-gram (floor)"} <= set(rows)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["floors"]) == ["color-hist", "vgg-gram"]
    assert summary["floors"]["color-hist"]["options"] == {"bins": 4}
    for result in (summary["before"], summary["after"], *summary["floors"].values()):
        assert 0.0 <= result["mean"]["style"]["mAP"] <= 100.0 and set(result["methods"]) == {"reinhard"}
    assert summary["files"]["report"] == str(out / "report.html")
    assert f"report:{out / 'report.html'}" in "".join(err.split())  # the path is printed (rich may wrap it)
    rendered, plots = _check_page(out / "report.html")
    assert plots == {"results", "training"} and rendered.title.startswith("ALADIN-NST quickstart")
    compare = json.loads((out / "compare.json").read_text())
    assert [e["label"] for e in compare["encoders"]] == ["untrained", "trained", "color-hist", "vgg-gram"]
