"""The command line as a user drives it: JSON output, exit code 2 with a hint on bad input."""

from __future__ import annotations

import json

import pytest
import torch

from nstzoo.cli import main
from nstzoo.data.folder import save_image
from tests.conftest import smooth_image


def run(capsys, *args):
    """Run the CLI in-process; returns (exit_code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def test_stylizers_list_json(capsys):
    code, out, _ = run(capsys, "stylizers", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["reinhard"]["weights"] == "not-needed" and rows["reinhard"]["plugin"] == "reinhard"
    assert set(rows["patch-wct"]) == {"name", "summary", "plugin", "weights"}


def test_plugins_json_lists_hooks(capsys):
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    by_name = {p["name"]: p for p in json.loads(out)}
    assert by_name["reinhard"]["hooks"] == ["register_stylizers"] and by_name["reinhard"]["builtin"]


def test_unknown_stylizer_exits_2_with_close_match(capsys, tmp_path):
    code, out, err = run(capsys, "stylizers", "show", "reinhrd")
    assert code == 2 and out == ""
    assert "unknown stylizer 'reinhrd'" in err and "did you mean 'reinhard'" in err


def test_bad_option_value_exits_2(capsys):
    code, _, _ = run(capsys, "data", "generate", "--kind", "paintings", "--count", "1", "--out", "x")
    assert code == 2


def test_weights_import_errors_are_clear(capsys, tmp_path):
    code, _, err = run(capsys, "weights", "import", "reinhard", str(tmp_path / "nothing.pth"))
    assert code == 2 and "'reinhard' has no official-checkpoint importer (it needs no weights)" in err


@pytest.mark.parametrize("name", ["reinhard", "patch-wct"])
def test_stylize_moves_colour_statistics_toward_style(capsys, tmp_path, name):
    from nstzoo.data.folder import load_image

    content = smooth_image(1, 48) * 0.5 + 0.25          # a grey-ish photo stand-in
    style = torch.zeros(3, 40, 40)
    style[0] = 0.9                                       # a strongly red painting with texture
    style[1] = torch.linspace(0, 0.4, 40).repeat(40, 1)
    style[2] = 0.1 + 0.1 * (torch.arange(40) % 4 < 2).float()[None, :].expand(40, 40)
    save_image(content, tmp_path / "c.png")
    save_image(style, tmp_path / "s.png")
    code, out, err = run(capsys, "stylize", "--stylizer", name, "--content", str(tmp_path / "c.png"),
                         "--style", str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png"), "--size", "48", "--json")
    assert code == 0, err
    assert json.loads(out)["output"] == str(tmp_path / "o.png")
    result, content, style = (load_image(tmp_path / f) for f in ("o.png", "c.png", "s.png"))
    assert result.shape == content.shape
    before = (content.mean((1, 2)) - style.mean((1, 2))).abs().sum()
    after = (result.mean((1, 2)) - style.mean((1, 2))).abs().sum()
    assert after < 0.35 * before
