"""Run-time guards and error paths: invalid stylizer outputs, exceptions in plugin code, broken
plugins, and files that are not checkpoints — each a one-line error naming the culprit, exit 2."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from nstzoo import StylizerSpec, hookimpl
from nstzoo.contract import OutputGuard, check_output, checked_stylize, plugin_code
from nstzoo.data.folder import save_image
from nstzoo.errors import PluginCodeError, PluginError, StylizerOutputError, UnknownNameError, WeightsError
from nstzoo.learner.synth import BatchSynthesizer
from nstzoo.registry import Registry, reset_registry
from nstzoo.weights import read_checkpoint, unwrap_state_dict
from tests.conftest import smooth_image
from tests.learner.helpers import ToyPlugin, make_images
from tests.test_cli_core import run


# ----------------------------------------------------------------------------- an in-test plugin
class Mean(nn.Module):
    """A sound stylizer: the content pulled halfway to the style's mean colour."""

    def forward(self, content, style):
        return (content + style.mean((2, 3), keepdim=True)) / 2


class NaNOut(nn.Module):
    def forward(self, content, style):
        return torch.full_like(content, float("nan"))


class Overshoot(nn.Module):
    def forward(self, content, style):
        return content * 3 - 1


class Shrinks(nn.Module):
    def forward(self, content, style):
        return content[..., ::2, ::2]


class RaisesInForward(nn.Module):
    def forward(self, content, style):
        return {}["missing"]  # KeyError: a plugin bug


def failing_factory():
    raise ValueError("unsupported width")


def failing_import(paths):
    raise KeyError("module.gate")


def failing_locate():
    raise OSError("permission denied: /opt/weights")


def reading_import(paths):
    return unwrap_state_dict(read_checkpoint(paths[0]), paths[0])


class GuardsPlugin:
    @hookimpl
    def register_stylizers(self, register):
        plain = {"summary": "test", "needs_weights": False}
        register(StylizerSpec(name="mean", factory=Mean, **plain))
        register(StylizerSpec(name="nan-out", factory=NaNOut, **plain))
        register(StylizerSpec(name="overshoot", factory=Overshoot, **plain))
        register(StylizerSpec(name="shrinks", factory=Shrinks, **plain))
        register(StylizerSpec(name="raises-forward", factory=RaisesInForward, **plain))
        register(StylizerSpec(name="bad-factory", factory=failing_factory, **plain))
        register(StylizerSpec(name="bad-import", factory=Mean, summary="test", weight_files=("bad.pth",),
                              import_official=failing_import))
        register(StylizerSpec(name="bad-locate", factory=Mean, summary="test", weight_files=("x.pth",),
                              import_official=failing_import, locate_official=failing_locate))
        register(StylizerSpec(name="reads-pth", factory=nn.Identity, summary="test", weight_files=("w.pth",),
                              import_official=reading_import))


def install(*extra: tuple[object, str]) -> Registry:
    """The in-test plugin (and ``extra`` ones) as the process-wide registry; no entry points (fast)."""
    registry = Registry(load_entrypoints=False)
    registry.register_plugin(GuardsPlugin(), "guards")
    for plugin, name in extra:
        registry.register_plugin(plugin, name)
    reset_registry(registry)
    return registry


@pytest.fixture
def images(tmp_path):
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    save_image(smooth_image(1, 40)[:, :37, :], content)  # 37x40: odd, not square
    save_image(smooth_image(2, 32), style)
    return content, style


def stylize(capsys, name, images, tmp_path, *extra):
    content, style = images
    return run(capsys, "stylize", "-s", name, "--content", str(content), "--style", str(style),
               "-o", str(tmp_path / "out.png"), *extra)


def only_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- check_output / guards
def test_check_output_accepts_and_clamps_within_tolerance():
    content = torch.rand(2, 3, 5, 7)
    out = check_output("x", content, content * 1.0005)
    assert out.max() <= 1.0 and torch.equal(out, (content * 1.0005).clamp(0, 1))


@pytest.mark.parametrize("output, expected", [
    (torch.rand(2, 3, 5, 6), "shape [2, 3, 5, 6], expected [2, 3, 5, 7]"),
    (torch.rand(2, 1, 5, 7), "shape [2, 1, 5, 7]"),
    (torch.full((2, 3, 5, 7), float("inf")), "210 of 210 values are NaN or infinite"),
    (torch.rand(2, 3, 5, 7) + 0.5, "expected [0, 1] (tolerance 0.001)"),
    (torch.ones(2, 3, 5, 7, dtype=torch.int64), "dtype torch.int64, expected floating point"),
    ([1, 2], "returned list, expected a tensor"),
])
def test_check_output_names_the_stylizer_and_the_violation(output, expected):
    with pytest.raises(StylizerOutputError) as info:
        check_output("bad", torch.rand(2, 3, 5, 7), output, plugin="their-plugin")
    message = info.value.message
    assert message.startswith("stylizer 'bad' (plugin 'their-plugin') returned an invalid output") and "\n" not in message
    assert expected in message


def test_bfloat16_outputs_get_one_ulp_of_tolerance():
    content = torch.rand(1, 3, 4, 4)
    check_output("x", content, torch.full((1, 3, 4, 4), 1.0039, dtype=torch.bfloat16))  # rounds to 1 + 2^-8
    with pytest.raises(StylizerOutputError):
        check_output("x", content, torch.full((1, 3, 4, 4), 1.0039))  # the same overshoot in fp32


def test_checked_stylize_attributes_forward_exceptions():
    with pytest.raises(PluginCodeError) as info:
        checked_stylize("raises-forward", RaisesInForward(), torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4),
                        plugin="guards")
    assert info.value.message == "stylizer 'raises-forward' (plugin 'guards'): forward raised KeyError: 'missing'"
    assert isinstance(info.value.__cause__, KeyError)


def test_plugin_code_passes_nstzoo_errors_through_and_looks_the_plugin_up():
    install()
    with pytest.raises(WeightsError, match="own message"):
        with plugin_code(None, "mean", "import_official"):
            raise WeightsError("own message")
    with pytest.raises(PluginCodeError, match=r"^stylizer 'mean' \(plugin 'guards'\): factory raised"):
        with plugin_code(None, "mean", "factory"):
            raise RuntimeError("x")


def test_output_guard_on_cpu_checks_at_once():
    guard = OutputGuard()
    content = torch.rand(2, 3, 4, 4)
    assert torch.equal(guard("ok", content, content), content)
    with pytest.raises(StylizerOutputError, match="stylizer 'nan'"):
        guard("nan", content, content * float("nan"))
    with pytest.raises(StylizerOutputError, match="shape"):
        guard("small", content, content[..., :2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the deferred (no-sync) path needs CUDA")
def test_output_guard_on_cuda_reports_at_the_next_poll():
    guard = OutputGuard()
    content = torch.rand(2, 3, 4, 4, device="cuda")
    out = guard("nan", content, content * float("nan"))  # queued, no sync
    assert out.device.type == "cuda"
    with pytest.raises(StylizerOutputError, match="stylizer 'nan'.*NaN"):
        guard.poll(wait=True)
    guard.poll(wait=True)  # reported once, then cleared


def test_synthesizer_stops_on_an_invalid_output_naming_the_stylizer():
    install()
    synth = BatchSynthesizer({"mean": Mean(), "overshoot": Overshoot()})
    contents, styles = torch.rand(4, 3, 8, 8), torch.rand(2, 3, 8, 8)
    ids = torch.arange(4)
    batch = synth(contents, styles, ids, ids[:2], methods=torch.tensor([0, 0, 0, 0]))
    assert batch.stylized.shape == (4, 3, 8, 8)
    with pytest.raises(StylizerOutputError, match=r"stylizer 'overshoot' \(plugin 'guards'\)"):
        synth(contents, styles, ids, ids[:2], methods=torch.tensor([0, 1, 0, 0]))


# ----------------------------------------------------------------------------- guards through the CLI
@pytest.mark.parametrize("name, expected", [
    ("nan-out", "NaN or infinite"),
    ("overshoot", "expected [0, 1]"),
    ("shrinks", "expected [1, 3, 37, 40]"),
])
def test_stylize_refuses_an_invalid_output(capsys, tmp_path, images, name, expected):
    install()
    code, out, err = stylize(capsys, name, images, tmp_path, "--size", "0")
    assert code == 2 and out == ""
    line = only_error_line(err)
    assert f"stylizer '{name}' (plugin 'guards') returned an invalid output" in line and expected in line
    assert not (tmp_path / "out.png").exists()


def learner_commands() -> tuple[object, str]:
    """The built-in plugin that brings `train`, `testset` ... (through register_commands, like any plugin)."""
    from nstzoo.cli import learner

    return learner, "learner"


def test_testset_build_stops_naming_the_stylizer(capsys, tmp_path):
    install(learner_commands())
    content, style = make_images(tmp_path, count=2)
    code, _, err = run(capsys, "testset", "build", "--stylizers", "mean,nan-out", "--content", str(content),
                       "--style", str(style), "--out", str(tmp_path / "ts"), "--styles", "1", "--contents", "2",
                       "--size", "32", "--device", "cpu")
    assert code == 2
    assert "stylizer 'nan-out' (plugin 'guards') returned an invalid output" in only_error_line(err)
    assert len(list((tmp_path / "ts" / "mean").glob("*.png"))) == 2  # the sound stylizer's images were made
    assert not list((tmp_path / "ts" / "nan-out").glob("*.png")) and not (tmp_path / "ts" / "manifest.csv").exists()


def test_train_stops_naming_the_stylizer(capsys, tmp_path):
    install((ToyPlugin(), "toy-plugin"), learner_commands())
    content, style = make_images(tmp_path, count=4)
    code, _, err = run(capsys, "train", "--stylizers", "overshoot", "--encoder", "toy", "--content", str(content),
                       "--style", str(style), "--out", str(tmp_path / "run"), "--steps", "1", "--batch-size", "4",
                       "--chunk-size", "4", "--device", "cpu", "--set", "synth.size=32", "--set", "data.workers=0",
                       "--set", "amp=false")
    assert code == 2
    assert "stylizer 'overshoot' (plugin 'guards') returned an invalid output" in only_error_line(err)


# ----------------------------------------------------------------------------- exceptions in plugin code
def test_import_official_raising_is_one_line_naming_plugin_and_stylizer(capsys, tmp_path, monkeypatch):
    install()
    (tmp_path / "bad.pth").write_bytes(b"")
    code, _, err = run(capsys, "weights", "import", "bad-import", str(tmp_path / "bad.pth"))
    assert code == 2
    assert only_error_line(err) == ("error: stylizer 'bad-import' (plugin 'guards'): import_official raised "
                                    "KeyError: 'module.gate'")
    assert "a bug in plugin 'guards'" in err and "NSTZOO_DEBUG=1" in err
    # NSTZOO_DEBUG=1: the error propagates (a traceback), with the plugin's own exception as its cause.
    monkeypatch.setenv("NSTZOO_DEBUG", "1")
    with pytest.raises(PluginCodeError) as info:
        run(capsys, "weights", "import", "bad-import", str(tmp_path / "bad.pth"))
    assert isinstance(info.value.__cause__, KeyError)


def test_locate_official_raising_is_attributed(capsys):
    install()
    code, _, err = run(capsys, "weights", "import", "bad-locate")
    assert code == 2
    assert "stylizer 'bad-locate' (plugin 'guards'): locate_official raised OSError: permission denied" in \
        only_error_line(err)


@pytest.mark.parametrize("name, expected", [
    ("bad-factory", "stylizer 'bad-factory' (plugin 'guards'): factory raised ValueError: unsupported width"),
    ("raises-forward", "stylizer 'raises-forward' (plugin 'guards'): forward raised KeyError: 'missing'"),
])
def test_factory_and_forward_raising_are_attributed(capsys, tmp_path, images, name, expected):
    install()
    code, _, err = stylize(capsys, name, images, tmp_path, "--size", "32")
    assert code == 2 and only_error_line(err) == f"error: {expected}"


# ----------------------------------------------------------------------------- broken plugins, everywhere
LONG = "x" * 150 + " the end of a long error"


class BrokenHook:
    @hookimpl
    def register_stylizers(self, register):
        raise RuntimeError(LONG)


class Twice:
    @hookimpl
    def register_stylizers(self, register):
        for _ in range(2):
            register(StylizerSpec(name="same", factory=Mean, summary="test", needs_weights=False))


def test_every_command_warns_once_about_a_failed_plugin(capsys):
    install((BrokenHook(), "broken"))
    code, out, err = run(capsys, "stylizers", "list", "--json")
    assert code == 0 and "mean" in {r["name"] for r in json.loads(out)}  # stdout stays machine-readable
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: plugin 'broken' failed to load; see `nstzoo plugins`"]
    code, _, err = run(capsys, "plugins")
    assert code == 0 and "warning:" not in err  # `plugins` shows the errors themselves


def test_plugins_prints_full_error_texts_when_piped(capsys):
    install((BrokenHook(), "broken"))
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    assert f"error: plugin 'broken': hook register_stylizers raised RuntimeError: {LONG}" in out.splitlines()


def test_unknown_name_says_a_failed_plugin_may_have_provided_it(capsys):
    registry = install((BrokenHook(), "broken"))
    with pytest.raises(UnknownNameError) as info:
        registry.stylizer("meen")
    assert info.value.failed_plugins == ["broken"]
    code, _, err = run(capsys, "stylizers", "show", "colour-mix")
    assert code == 2
    assert ("hint: plugin 'broken' failed to load and may have provided it; see `nstzoo plugins`") in err
    # A close match among the loaded names is still offered, after the more likely explanation.
    assert "(or did you mean 'mean'?)" in str(info.value)


def test_unknown_name_without_failed_plugins_keeps_the_close_match():
    registry = install()
    with pytest.raises(UnknownNameError) as info:
        registry.stylizer("meen")
    assert info.value.hint == "did you mean 'mean'?" and info.value.failed_plugins == []


def test_a_plugin_registering_a_name_twice_is_told_exactly_that(capsys):
    registry = install((Twice(), "dup"))
    with pytest.raises(PluginError) as info:
        registry.stylizer("same")
    assert info.value.message == "plugin 'dup' registers stylizer 'same' twice"
    assert "uninstall" not in str(info.value)
    assert ("dup", "hook register_stylizers: plugin 'dup' registers stylizer 'same' twice") in registry.errors
    code, _, err = run(capsys, "stylizers", "show", "same")
    assert code == 2 and "error: plugin 'dup' registers stylizer 'same' twice" in err
    assert "warning: plugin 'dup' reported errors; see `nstzoo plugins`" in err


# ----------------------------------------------------------------------------- files and docs
def test_a_non_checkpoint_pth_is_not_called_a_pickle(capsys, tmp_path):
    path = tmp_path / "w.pth"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint") as info:
        read_checkpoint(path)
    assert "execute code" not in str(info.value) and "w.pth" in str(info.value)
    install()
    code, _, err = run(capsys, "weights", "import", "reads-pth", str(path))
    assert code == 2 and "w.pth: not a PyTorch checkpoint" in only_error_line(err) and "execute code" not in err


def test_a_truncated_checkpoint_is_unreadable_not_unsafe(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint") as info:
        read_checkpoint(path)
    assert "execute code" not in str(info.value)


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_real_checkpoints_still_load(tmp_path, zipfile_format):
    path = tmp_path / "ok.pth"
    torch.save({"w": torch.arange(3.0)}, path, _use_new_zipfile_serialization=zipfile_format)
    assert torch.equal(read_checkpoint(path)["w"], torch.arange(3.0))


def test_stylize_help_documents_size_zero(capsys, tmp_path, images):
    code, out, _ = run(capsys, "stylize", "--help")
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())
    assert code == 0 and "0 keeps each image's own size (the output then has the content's size)" in text
    install()
    code, out, err = stylize(capsys, "mean", images, tmp_path, "--size", "0", "--json")
    assert code == 0, err
    assert json.loads(out)["size"] == [37, 40]


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_that_imports_code_is_still_refused_as_such(tmp_path):
    import pickle

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"weight": Exploit()}, protocol=2))  # the protocol torch.save uses
    with pytest.raises(WeightsError, match="refused to load — the pickle needs to execute code") as info:
        read_checkpoint(path)
    assert "posix.system" in str(info.value)


# ----------------------------------------------------------------------------- exceptions in a recipe
def _recipe_build(model, ctx):
    from nstzoo import TrainParts

    return TrainParts(model, {"total": ctx.adam(model.parameters())})


def _raising_losses(parts, config, content, style, step):
    raise KeyError("content_weight")


def _raising_build(model, ctx):
    raise AttributeError("'NoneType' object has no attribute 'encoder'")


class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, content, style):
        return (content * self.weight).clamp(0, 1)


class RecipePlugin:
    @hookimpl
    def register_stylizers(self, register):
        from nstzoo import Recipe

        common = {"summary": "test", "weights_source": "train it"}
        register(StylizerSpec(name="bad-losses", factory=_Scale, recipe=Recipe(build=_recipe_build,
                                                                               losses=_raising_losses), **common))
        register(StylizerSpec(name="bad-build", factory=_Scale, recipe=Recipe(build=_raising_build,
                                                                              losses=_raising_losses), **common))


@pytest.mark.parametrize("name, what, raised", [("bad-losses", "recipe.losses", "KeyError: 'content_weight'"),
                                                 ("bad-build", "recipe.build", "AttributeError")])
def test_a_raising_recipe_is_one_line_naming_plugin_and_stylizer(capsys, tmp_path, name, what, raised):
    install((RecipePlugin(), "recipes"))
    content, style = make_images(tmp_path, count=2)
    code, _, err = run(capsys, "stylizers", "train", name, "--content", str(content), "--style", str(style),
                       "--out", str(tmp_path / "run"), "--steps", "1", "--size", "32", "--batch-size", "2",
                       "--device", "cpu")
    assert code == 2
    line = only_error_line(err)
    assert f"stylizer '{name}' (plugin 'recipes'): {what} raised {raised}" in line
