"""The plugin contract as a plugin author and a user meet it."""

from __future__ import annotations

import types

import pytest
from torch import nn

from nstzoo import EncoderSpec, StylizerSpec, hookimpl
from nstzoo.errors import PluginError, UnknownNameError
from nstzoo.registry import Registry, get_registry


class Identity(nn.Module):
    def forward(self, content, style):
        return content


def stylizer_plugin(*names):
    class Plugin:
        @hookimpl
        def register_stylizers(self, register):
            for name in names:
                register(StylizerSpec(name=name, factory=Identity, summary="test", needs_weights=False))
    return Plugin()


def test_builtins_load_through_entry_points():
    registry = get_registry()
    assert {"reinhard", "patch-wct"} <= set(registry.stylizers())
    assert registry.plugins["reinhard"].builtin
    assert registry.plugins["reinhard"].distribution == "nstzoo"
    assert registry.errors == []


def test_in_test_plugin_registers_and_unregisters():
    registry = Registry(load_entrypoints=False)
    registry.register_plugin(stylizer_plugin("alpha", "beta"), "mine")
    assert list(registry.stylizers()) == ["alpha", "beta"]
    assert registry.stylizer_plugin("alpha") == "mine"
    registry.unregister_plugin("mine")
    assert registry.stylizers() == {}


def test_duplicate_name_is_an_error_naming_both_plugins():
    registry = Registry(load_entrypoints=False)
    registry.register_plugin(stylizer_plugin("same", "other"), "first")
    registry.register_plugin(stylizer_plugin("same"), "second")
    assert "other" in registry.stylizers() and "same" not in registry.stylizers()
    with pytest.raises(PluginError, match="'first' and 'second'"):
        registry.stylizer("same")
    assert any("duplicate stylizer name 'same'" in msg for _, msg in registry.errors)


def test_duplicate_name_strict_mode_raises_at_load():
    registry = Registry(load_entrypoints=False, strict=True)
    registry.register_plugin(stylizer_plugin("same"), "first")
    registry.register_plugin(stylizer_plugin("same"), "second")
    with pytest.raises(PluginError, match="'first' and 'second'"):
        registry.stylizers()


def test_misspelt_hook_is_reported_with_a_hint_and_plugin_refused():
    class Misspelt:
        @hookimpl
        def register_stylizer(self, register):  # missing the final "s"
            raise AssertionError("must never be called")

    registry = Registry(load_entrypoints=False)
    assert registry.register_plugin(Misspelt(), "typo") is False
    (plugin, message), = registry.errors
    assert plugin == "typo"
    assert "register_stylizer" in message and "did you mean 'register_stylizers'" in message
    registry.register_plugin(stylizer_plugin("fine"), "good")  # later plugins still load
    assert list(registry.stylizers()) == ["fine"]


def test_misspelt_hook_strict_mode_raises():
    class Misspelt:
        @hookimpl
        def register_encoder(self, register):
            pass

    with pytest.raises(PluginError, match="register_encoder"):
        Registry(load_entrypoints=False, strict=True).register_plugin(Misspelt(), "typo")


def test_hook_that_raises_is_reported_and_others_survive():
    class Broken:
        @hookimpl
        def register_stylizers(self, register):
            raise RuntimeError("boom")

    registry = Registry(load_entrypoints=False)
    registry.register_plugin(Broken(), "broken")
    registry.register_plugin(stylizer_plugin("ok"), "fine")
    assert list(registry.stylizers()) == ["ok"]
    assert registry.errors == [("broken", "hook register_stylizers raised RuntimeError: boom")]


def test_bad_spec_name_is_refused():
    with pytest.raises(PluginError, match="invalid stylizer name"):
        StylizerSpec(name="Bad Name", factory=Identity, summary="x", needs_weights=False)


def test_unknown_name_lists_known_and_closest():
    registry = Registry(load_entrypoints=False)
    registry.register_plugin(stylizer_plugin("sanet", "pama"), "p")
    with pytest.raises(UnknownNameError) as info:
        registry.stylizer("snet")
    assert info.value.close_match == "sanet"
    assert "known: pama, sanet" in str(info.value) and "did you mean 'sanet'" in str(info.value)


def test_parse_stylizer_list_validates_and_dedupes():
    registry = Registry(load_entrypoints=False)
    registry.register_plugin(stylizer_plugin("a", "b"), "p")
    assert registry.parse_stylizer_list("b, a,b") == ["b", "a"]
    with pytest.raises(UnknownNameError):
        registry.parse_stylizer_list("a,zzz")


def test_encoders_register_through_the_same_path():
    class Enc:
        @hookimpl
        def register_encoders(self, register):
            register(EncoderSpec(name="toy", factory=nn.Identity, summary="x"))

    registry = Registry(load_entrypoints=False)
    registry.register_plugin(Enc(), "enc")
    assert registry.encoder("toy").factory is nn.Identity
    assert registry.plugins["enc"].encoders == ["toy"]


def test_register_commands_hook_adds_a_command_and_failure_is_reported():
    import typer

    class Commands:
        @hookimpl
        def register_commands(self, app):
            @app.command("hello")
            def hello():
                print("hi")

    class BadCommands:
        @hookimpl
        def register_commands(self, app):
            raise ValueError("nope")

    registry = Registry(load_entrypoints=False)
    registry.register_plugin(Commands(), "cmd")
    registry.register_plugin(BadCommands(), "bad")
    app = typer.Typer()
    registry.register_commands(app)
    assert [c.name for c in app.registered_commands] == ["hello"]
    assert ("bad", "hook register_commands raised ValueError: nope") in registry.errors


def test_load_plugins_env_empty_means_builtins_only(monkeypatch):
    fake_ep = types.SimpleNamespace(name="thirdparty", value="does_not_exist_module", dist=None,
                                    load=lambda: (_ for _ in ()).throw(ImportError("should not load")))
    monkeypatch.setattr("nstzoo.registry.metadata.entry_points", lambda group: [fake_ep])
    monkeypatch.setenv("NSTZOO_LOAD_PLUGINS", "")
    registry = Registry()
    assert registry.plugins == {} and registry.errors == []
    monkeypatch.delenv("NSTZOO_LOAD_PLUGINS")
    registry = Registry()
    assert registry.errors == [("thirdparty", "failed to import does_not_exist_module: ImportError: should not load")]
