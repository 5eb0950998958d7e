"""The example third-party plugin, installed as a real distribution and driven through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """pip-install examples/plugin (no deps) into a private folder: a real dist-info with its entry point."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "plugin")], check=True,
                   capture_output=True, text=True)
    return target


def nstzoo(site, home, *args, check=True):
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "NSTZOO_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "nstzoo", *args], env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_third_party_plugin_full_weights_path(plugin_site, tmp_path):
    from nstzoo.data.folder import save_image
    from nstzoo.data.folder import load_image

    home = tmp_path / "home"
    listed = {r["name"]: r for r in json.loads(nstzoo(plugin_site, home, "stylizers", "list", "--json").stdout)}
    assert {"reinhard", "patch-wct", "colour-mix"} <= set(listed)
    assert listed["colour-mix"]["weights"] == "missing" and listed["colour-mix"]["plugin"] == "colour-mix"

    plugins = {p["name"]: p for p in json.loads(nstzoo(plugin_site, home, "plugins", "--json").stdout)}
    assert plugins["colour-mix"]["distribution"] == "nstzoo-example-plugin" and not plugins["colour-mix"]["builtin"]

    content, style = tmp_path / "c.png", tmp_path / "s.png"
    save_image(smooth_image(3, 40) * 0.4 + 0.3, content)
    save_image(torch.stack([torch.full((40, 40), 0.9), torch.rand(40, 40) * 0.3, torch.full((40, 40), 0.2)]), style)
    missing = nstzoo(plugin_site, home, "stylize", "-s", "colour-mix", "--content", str(content), "--style", str(style),
                     "-o", str(tmp_path / "x.png"), check=False)
    assert missing.returncode == 2 and "nstzoo weights import colour-mix colour_mix.pth" in missing.stderr

    official = tmp_path / "colour_mix.pth"
    g = torch.Generator().manual_seed(0)
    # An open gate (sigmoid(3) = 0.95), so the output takes the style's colours whatever the mixing weights.
    torch.save({"state_dict": {"module.gate": torch.full((3,), 3.0), "module.mix.weight": torch.randn(3, 3, 1, 1, generator=g),
                               "module.mix.bias": torch.randn(3, generator=g)}}, official)
    nstzoo(plugin_site, home, "weights", "import", "colour-mix", str(official))
    stored = json.loads(nstzoo(plugin_site, home, "weights", "list", "--json").stdout)["files"]
    assert [f["name"] for f in stored] == ["colour-mix"] and stored[0]["sources"][0]["file"] == "colour_mix.pth"
    assert json.loads(nstzoo(plugin_site, home, "weights", "verify", "--json").stdout)[0]["ok"]

    out = tmp_path / "out.png"
    nstzoo(plugin_site, home, "stylize", "-s", "colour-mix", "--content", str(content), "--style", str(style),
           "-o", str(out), "--size", "40")
    result, c, s = load_image(out), load_image(content), load_image(style)
    before = (c.mean((1, 2)) - s.mean((1, 2))).abs().sum()
    after = (result.mean((1, 2)) - s.mean((1, 2))).abs().sum()
    assert after < 0.8 * before

    # The learner takes a third-party stylizer like a built-in one.
    from nstzoo.data.generate import generate_folder

    generate_folder("content", 4, 32, 0, tmp_path / "contents")
    generate_folder("style", 4, 32, 1, tmp_path / "styles")
    tiny = ["--set", "encoder.options={vit_model: vit_tiny_patch16_224, vit_size: 32, vit_kwargs: {depth: 1, "
            "embed_dim: 32, num_heads: 2}, vgg_size: 32, embed_dim: 32, random_init: true}"]
    trained = nstzoo(plugin_site, home, "train", "--stylizers", "colour-mix,reinhard", "--content",
                     str(tmp_path / "contents"), "--style", str(tmp_path / "styles"), "--out", str(tmp_path / "run"),
                     "--steps", "1", "--batch-size", "4", "--set", "synth.size=32", "--set", "data.workers=0",
                     "--set", "amp=false", *tiny, "--json")
    methods = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["methods"]
    assert set(methods) == {"colour-mix", "reinhard"} and json.loads(trained.stdout)["steps"] == 1


def test_third_party_plugin_is_checked_trained_installed_and_used_through_the_cli(plugin_site, tmp_path):
    """Its recipe trains it with `nstzoo stylizers train`: no change to nstzoo, no import of its module by nstzoo."""
    from nstzoo.data.folder import load_image, save_image

    home = tmp_path / "home"
    shown = json.loads(nstzoo(plugin_site, home, "stylizers", "show", "colour-mix", "--json").stdout)
    assert shown["trainable"] and shown["training"]["recipe"] == {"style_weight": 1.0, "content_weight": 0.2}
    checked = nstzoo(plugin_site, home, "stylizers", "check", "colour-mix", "--json")
    assert json.loads(checked.stdout)["ok"] is True

    contents, styles = tmp_path / "contents", tmp_path / "styles"
    contents.mkdir(), styles.mkdir()
    for i in range(3):
        save_image(smooth_image(i, 48) * 0.3 + 0.35, contents / f"c{i}.png")
        g = torch.Generator().manual_seed(i)
        colour = torch.rand(3, 1, 1, generator=g)
        save_image((colour + 0.15 * torch.rand(3, 48, 48, generator=g)).clamp(0, 1), styles / f"s{i}.png")
    run = tmp_path / "run"
    nstzoo(plugin_site, home, "stylizers", "train", "colour-mix", "--content", str(contents), "--style", str(styles),
           "--out", str(run), "--steps", "30", "--size", "32", "--set", "recipe.style_weight=2.0", "--install")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))
    assert sum(r["total"] for r in records[-5:]) < sum(r["total"] for r in records[:5])
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["recipe"]["style_weight"] == 2.0
    listed = {r["name"]: r for r in json.loads(nstzoo(plugin_site, home, "stylizers", "list", "--json").stdout)}
    assert listed["colour-mix"]["weights"] == "ready"

    out = tmp_path / "stylized.png"
    nstzoo(plugin_site, home, "stylize", "-s", "colour-mix", "--content", str(contents / "c0.png"),
           "--style", str(styles / "s1.png"), "-o", str(out), "--size", "0")
    assert load_image(out).shape == (3, 48, 48)
    unknown = nstzoo(plugin_site, home, "stylizers", "train", "colour-mix", "--content", str(contents), "--style",
                     str(styles), "--out", str(tmp_path / "x"), "--set", "recipe.style_weigth=1", check=False)
    assert unknown.returncode == 2 and "recipe.style_weight" in unknown.stderr


def test_broken_third_party_plugin_does_not_take_the_cli_down(tmp_path):
    """A distribution whose plugin raises on import: reported by `nstzoo plugins`, the rest works."""
    site = tmp_path / "site"
    (site / "broken_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "broken_plugin-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (site / "broken_plugin-1.0.dist-info" / "entry_points.txt").write_text("[nstzoo]\nbroken = broken_plugin\n")
    (site / "broken_plugin.py").write_text("raise RuntimeError('this plugin is broken')\n")
    listed = json.loads(nstzoo(site, tmp_path, "stylizers", "list", "--json").stdout)
    assert {"reinhard", "patch-wct"} <= {r["name"] for r in listed}
    plugins = {p["name"]: p for p in json.loads(nstzoo(site, tmp_path, "plugins", "--json").stdout)}
    assert plugins["broken"]["distribution"] == "broken-plugin"
    assert "RuntimeError: this plugin is broken" in plugins["broken"]["errors"][0]
    strict = subprocess.run([sys.executable, "-m", "nstzoo", "stylizers", "list"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "NSTZOO_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2 and "this plugin is broken" in strict.stderr
    only_builtins = subprocess.run([sys.executable, "-m", "nstzoo", "plugins", "--json"], capture_output=True, text=True,
                                   env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "NSTZOO_LOAD_PLUGINS": ""})
    assert "broken" not in {p["name"] for p in json.loads(only_builtins.stdout)}
