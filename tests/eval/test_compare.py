"""`nstzoo compare` (Tables 2 and 3) and `nstzoo encoders export`, as a user runs them."""

from __future__ import annotations

import json

import pytest

from nstzoo.errors import ConfigError, DataError
from nstzoo.eval.compare import parse_encoder_entries, split_top_level
from tests.eval.helpers import build_small_testset, export_toy
from tests.learner.helpers import install_toy_registry
from tests.test_cli_core import run


@pytest.fixture(scope="module")
def testset(tmp_path_factory):
    """4 styles x 3 contents, stylized by reinhard and patch-wct at 32 px."""
    return build_small_testset(tmp_path_factory.mktemp("compare"))


def test_compare_two_floors_and_exported_encoders(capsys, tmp_path, testset):
    install_toy_registry()
    toy = export_toy(tmp_path / "toy.safetensors")
    # A floor exported with options, then used as a file: the header rebuilds it.
    hist = tmp_path / "hist4.safetensors"
    code, out, err = run(capsys, "encoders", "export", "color-hist", "--set", "options.bins=4", "-o", str(hist),
                         "--json")
    assert code == 0, err
    assert json.loads(out)["options"] == {"bins": 4}

    report_dir = tmp_path / "cmp"
    code, out, err = run(capsys, "compare", "--encoders", f"{toy},color-hist",
                         "--encoders", f"vgg-gram(vgg=vgg16-hed,stat=mean-std,size=32,taps=[relu1_1,relu2_1]),"
                                       f"h4={hist}",
                         "--testset", str(testset), "--out", str(report_dir), "--json")
    assert code == 0, err
    doc = json.loads(out)
    labels = ["toy", "color-hist", "vgg-gram(vgg=vgg16-hed,stat=mean-std,size=32,taps=[relu1_1,relu2_1])", "h4"]
    assert list(doc["results"]) == labels
    assert [e["kind"] for e in doc["encoders"]] == ["file", "registered", "registered", "file"]
    assert doc["encoders"][2]["options"] == {"vgg": "vgg16-hed", "stat": "mean-std", "size": 32,
                                             "taps": ["relu1_1", "relu2_1"]}
    assert [e["embed_dim"] for e in doc["encoders"]] == [16, 512, 2 * (64 + 128), 64]
    assert doc["methods"] == ["patch-wct", "reinhard"]
    for label in labels:
        result = doc["results"][label]
        assert set(result["methods"]) == {"patch-wct", "reinhard"}
        for m in [*result["methods"].values(), result["mean"]]:
            for group in ("style", "content"):
                assert {"mAP", "IR-1"} <= set(m[group])
                assert all(0.0 <= v <= 100.0 for v in m[group].values())
        # The average column is the mean of the two methods' values.
        style = [result["methods"][m]["style"]["mAP"] for m in ("patch-wct", "reinhard")]
        assert result["mean"]["style"]["mAP"] == pytest.approx(sum(style) / 2)
        # Retrieval samples for the report: top-6 of up to 4 queries per method, hits marked.
        queries = doc["samples"][label]["reinhard"]["queries"]
        assert len(queries) == 4 and all(len(q["hits"]) == 6 for q in queries)
        assert all(h["correct"] == (h["style_id"] == q["style_id"]) for q in queries for h in q["hits"])
        assert all(1 <= q["source_rank"] <= 15 for q in queries)
    # The same histogram (4 bins) built by name gives the same numbers as its exported file.
    code, out, err = run(capsys, "compare", "--encoders", "color-hist(bins=4)", "--testset", str(testset), "--json")
    assert code == 0, err
    assert json.loads(out)["results"]["color-hist(bins=4)"]["mean"] == doc["results"]["h4"]["mean"]

    written = json.loads((report_dir / "compare.json").read_text())
    assert written["results"] == doc["results"]
    markdown = (report_dir / "compare.md").read_text()
    assert "Table 2 — style retrieval" in markdown and "Table 3 — content retrieval" in markdown
    assert "| h4 |" in markdown and "reinhard mAP" in markdown

    # Without --json: both tables on stdout, one line per encoder.
    code, out, err = run(capsys, "compare", "--encoders", f"{toy},color-hist", "--testset", str(testset))
    assert code == 0, err
    assert "Table 2" in out and "Table 3" in out and "average" in out
    assert sum(line.lstrip().startswith("color-hist") for line in out.splitlines()) == 2


def test_compare_errors_exit_2_naming_the_problem(capsys, tmp_path, testset):
    code, _, err = run(capsys, "compare", "--encoders", "color-hst", "--testset", str(testset))
    assert code == 2 and "'color-hst'" in err and "did you mean 'color-hist'" in err
    code, _, err = run(capsys, "compare", "--encoders", str(tmp_path / "nope.safetensors"), "--testset", str(testset))
    assert code == 2 and "no such file or folder" in err
    code, _, err = run(capsys, "compare", "--encoders", "color-hist(bins=4", "--testset", str(testset))
    assert code == 2 and "never closed" in err
    code, _, err = run(capsys, "compare", "--encoders", "color-hist(colours=4)", "--testset", str(testset))
    assert code == 2 and "encoder 'color-hist': bad options" in err and "colours" in err
    # The same methods in two test sets would make two columns of one name.
    code, _, err = run(capsys, "compare", "--encoders", "color-hist", "--testset", str(testset),
                       "--testset", str(testset))
    assert code == 2 and "is in two test sets" in err
    code, _, err = run(capsys, "compare", "--encoders", "color-hist", "--testset", str(tmp_path))
    assert code == 2 and "no manifest.csv" in err


def test_encoders_export_round_trip_and_errors(capsys, tmp_path):
    import torch

    from nstzoo.weights import load_encoder, read_metadata

    target = tmp_path / "gram.safetensors"
    code, out, err = run(capsys, "encoders", "export", "vgg-gram", "-o", str(target), "--options-json",
                         '{"vgg": "vgg16-hed", "taps": ["relu1_1"]}', "--set", "options.stat=mean-std",
                         "--set", "options.size=32")
    assert code == 0, err
    header = read_metadata(target)["config"]
    assert header["encoder"] == "vgg-gram"
    assert {k: header["options"][k] for k in ("vgg", "taps", "stat", "size")} == \
        {"vgg": "vgg16-hed", "taps": ["relu1_1"], "stat": "mean-std", "size": 32}
    model = load_encoder(target)
    assert model.embed_dim == 128 and model(torch.rand(2, 3, 40, 40)).shape == (2, 128)

    code, _, err = run(capsys, "encoders", "export", "vgg-gram", "-o", str(target))
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "encoders", "export", "color-hist", "-o", str(tmp_path / "x.safetensors"),
                       "--set", "bins=4")
    assert code == 2 and "only options.KEY=VALUE" in err
    code, _, err = run(capsys, "encoders", "export", "color-hist", "-o", str(tmp_path / "x.safetensors"),
                       "--options-json", "[4]")
    assert code == 2 and "expected a JSON object" in err
    code, _, err = run(capsys, "encoders", "export", "color-hist", "-o", str(tmp_path / "x.safetensors"),
                       "--set", "options.bins=200")
    assert code == 2 and "bins=200" in err
    code, _, err = run(capsys, "encoders", "export", "colour-hist", "-o", str(tmp_path / "x.safetensors"))
    assert code == 2 and "did you mean 'color-hist'" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_entry_parsing(tmp_path):
    assert split_top_level("a, b(c=1,d=[2,3]) ,e{f,g}", "--encoders") == ["a", "b(c=1,d=[2,3])", "e{f,g}"]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_top_level("a)", "--encoders")
    run_dir = tmp_path / "runs" / "paper"
    run_dir.mkdir(parents=True)
    odd = tmp_path / "a=b.safetensors"
    odd.write_bytes(b"")
    entries = parse_encoder_entries([f"ours={run_dir},{odd},vgg-gram(stat=mean-std,size=64),{run_dir}"])
    assert [(e.label, e.kind) for e in entries] == [("ours", "run"), ("a=b", "file"),
                                                    ("vgg-gram(stat=mean-std,size=64)", "registered"),
                                                    ("paper", "run")]
    assert entries[2].options == {"stat": "mean-std", "size": 64}
    # Two entries with the same default label are told apart.
    assert [e.label for e in parse_encoder_entries(["color-hist", "color-hist"])] == ["color-hist", "color-hist#2"]
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_encoder_entries(["color-hist(4)"])
    with pytest.raises(DataError, match="not an encoder name"):
        parse_encoder_entries(["Not A Name"])
