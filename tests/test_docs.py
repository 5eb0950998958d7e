"""Docs that users follow must match the code: hook signatures and the example plugin's source."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from nstzoo import hookspecs

ROOT = Path(__file__).resolve().parents[1]
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()


def test_every_hook_is_documented_with_its_exact_signature():
    hooks = [name for name, fn in vars(hookspecs).items()
             if callable(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")]
    assert sorted(hooks) == ["register_commands", "register_encoders", "register_stylizers"]
    for name in hooks:
        signature = str(inspect.signature(getattr(hookspecs, name))).replace("'", "").replace('"', "")
        assert f"def {name}{signature}" in CONTRIBUTING, f"CONTRIBUTING.md lacks `def {name}{signature}`"


def test_tutorial_code_is_the_example_plugins_real_source():
    source = (ROOT / "examples" / "plugin" / "nstzoo_example_plugin.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", CONTRIBUTING, flags=re.S)
    quoted = [b for b in blocks if "ColourMix" in b or "OFFICIAL_KEYS" in b or "register_stylizers(register)" in b]
    assert len(quoted) >= 3
    for block in quoted:
        if "Registry(load_entrypoints=False)" in block:
            continue
        for piece in block.strip().split("\n\n\n"):  # top-level definitions, quoted in tutorial order
            assert piece.strip() in source, f"tutorial code differs from examples/plugin:\n{piece[:200]}"


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make quickstart" in readme and "make test" in readme
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["make test"]
