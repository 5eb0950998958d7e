"""Configuration: YAML + --set overrides + flags, with errors that name the key."""

from __future__ import annotations

import pytest

from nstzoo.learner.config import build_train_config
from nstzoo.errors import ConfigError


def test_layers_merge_in_order(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("steps: 10\noptim: {lr: 1.0e-3}\nsynth: {stylizers: [reinhard]}\n")
    cfg = build_train_config([base], ["optim.lr=3e-4", "loss.temperature=0.07"], {"synth.stylizers": "a,b", "steps": None})
    assert (cfg.steps, cfg.optim.lr, cfg.loss.temperature, cfg.synth.stylizers) == (10, 3e-4, 0.07, ["a", "b"])
    assert cfg.optim.lr_decay == 0.999875 and cfg.optim.decay_every == 100  # the paper's schedule by default


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    ("steps=many", "config key 'steps' must be int, got 'many'"),
    ("batch_size=7", "invalid batch_size=7"),
    ("loss.temperature=0", "invalid loss.temperature=0.0"),
    ("synth.weights={zzz: 1}", "synth.weights names stylizers not in synth.stylizers"),
    ("noequals", "expected key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        build_train_config([], [override])
    assert message in str(info.value)


def test_bad_yaml_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        build_train_config([bad])


def test_shipped_configs_are_valid():
    """configs/*.yaml and every ablation fragment layered on the paper config parse and validate."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    paper = build_train_config([root / "paper.yaml"])
    assert (paper.batch_size, paper.synth.size, paper.encoder.options["embed_dim"]) == (1024, 512, 1024)
    assert paper.synth.stylizers == ["neat", "pama", "sanet"]
    subsets = set()
    for fragment in sorted((root / "ablations").glob("*.yaml")):
        cfg = build_train_config([root / "paper.yaml", fragment])
        subsets.add(tuple(cfg.synth.stylizers))
    assert len(subsets) == 7  # every non-empty subset of {neat, pama, sanet}, as in Table 1


def test_quickstart_config_is_valid():
    from nstzoo.config import from_dict
    from nstzoo.learner.config import TrainConfig
    from nstzoo.quickstart import default_config

    raw = default_config()
    from_dict(TrainConfig, raw["train"]).validate()
    assert raw["quickstart"]["test_styles"] > 0


def test_every_shipped_yaml_works_with_the_command_its_header_names():
    """Each file in configs/ names its command in a header comment; that command's config builder accepts it."""
    import re
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "configs").rglob("*.yaml"))
    assert files
    for path in files:
        header = "".join(line.lstrip("# ").rstrip("\\\n") + " " for line in path.read_text().splitlines()
                         if line.startswith("#"))
        match = re.search(r"nstzoo (train|quickstart)\s+(.*)", header)
        assert match, f"{path.name}: the header must name the command that takes it"
        args = shlex.split(match.group(2))
        layered = [root / args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--config")]
        assert path in layered, f"{path.name}: its header command does not pass it"
        if match.group(1) == "train":
            build_train_config(layered)
        else:  # quickstart: its train: section is a train config, its quickstart: section its own
            from nstzoo.config import from_dict, load_yaml
            from nstzoo.learner.config import TrainConfig

            raw = load_yaml(path)
            from_dict(TrainConfig, raw["train"]).validate()
            assert set(raw) == {"quickstart", "train"}
