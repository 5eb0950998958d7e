"""The plugin manager: finds plugins through entry points and collects their specs.

Entry points of the group ``nstzoo`` are loaded one at a time. A plugin that fails to import, has a
bad hook signature, implements a hook that does not exist (a misspelling), or raises inside a hook
is recorded in :attr:`Registry.errors` and the others still load — unless ``NSTZOO_STRICT_PLUGINS=1``,
which turns the first such problem into a :class:`~nstzoo.errors.PluginError` (for plugin authors).

Environment:
    NSTZOO_LOAD_PLUGINS: comma-separated entry-point or distribution names of third-party plugins to
        load; ``""`` loads built-ins only; unset loads everything installed.
    NSTZOO_STRICT_PLUGINS: ``1`` makes plugin problems fatal.
    NSTZOO_TRACE_PLUGINS: ``1`` prints every hook call to stderr.
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownNameError
from .specs import EncoderSpec, StyleEncoder, StylizerSpec

ENTRY_POINT_GROUP = "nstzoo"
BUILTIN_DISTRIBUTION = "nstzoo"
HOOK_NAMES = ("register_stylizers", "register_encoders", "register_commands")

T = TypeVar("T", StylizerSpec, EncoderSpec)


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``nstzoo plugins`` shows it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    stylizers: list[str] = field(default_factory=list)
    encoders: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": self.hooks,
            "stylizers": self.stylizers,
            "encoders": self.encoders,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Registered(Generic[T]):
    spec: T
    plugin: str


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class Registry:
    """Stylizers and encoders contributed by plugins.

    Tests build their own ``Registry(load_entrypoints=False)`` and add in-test plugins with
    :meth:`register_plugin`; the process-wide one comes from :func:`get_registry`.
    """

    def __init__(self, *, load_entrypoints: bool = True, strict: bool | None = None,
                 allow: Iterable[str] | None | str = "env"):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.strict = _env_flag("NSTZOO_STRICT_PLUGINS") if strict is None else strict
        self.trace = _env_flag("NSTZOO_TRACE_PLUGINS")
        if allow == "env":
            raw = os.environ.get("NSTZOO_LOAD_PLUGINS")
            allow = None if raw is None else [p.strip() for p in raw.split(",") if p.strip()]
        self.allow: set[str] | None = None if allow is None else set(allow)  # type: ignore[arg-type]
        self.plugins: dict[str, PluginInfo] = {}
        self._stylizers: dict[str, Registered[StylizerSpec]] = {}
        self._encoders: dict[str, Registered[EncoderSpec]] = {}
        self._conflicts: dict[tuple[str, str], list[str]] = {}
        self._collected = False
        if load_entrypoints:
            self.load_entrypoints()

    # ----------------------------------------------------------------------------- loading
    def _fail(self, info: PluginInfo, message: str) -> None:
        info.errors.append(message)
        if self.strict:
            raise PluginError(f"plugin {info.name!r} ({info.distribution or 'no distribution'}): {message}",
                              hint="unset NSTZOO_STRICT_PLUGINS to load the other plugins anyway")

    def load_entrypoints(self) -> None:
        """Load every ``nstzoo`` entry point, one by one, recording failures."""
        seen: set[tuple[str, str]] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if (ep.name, ep.value) in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            builtin = dist_name is not None and dist_name.lower() == BUILTIN_DISTRIBUTION
            if not builtin and self.allow is not None and ep.name not in self.allow and (dist_name or "") not in self.allow:
                continue
            info = PluginInfo(ep.name, dist_name, version, builtin)
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure of a third-party plugin
                self.plugins[info.name] = info
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                self._fail(info, f"failed to import {ep.value}: {detail}")
                continue
            self.register_plugin(plugin, ep.name, distribution=dist_name, version=version, builtin=builtin)

    def register_plugin(self, plugin: object, name: str, *, distribution: str | None = None,
                        version: str | None = None, builtin: bool = False) -> bool:
        """Add a plugin object or module; returns False (and records why) if it was refused."""
        info = PluginInfo(name, distribution, version, builtin)
        self.plugins[name] = info
        self._collected = False
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._fail(info, f"invalid hook implementation: {exc}")
            return False
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(plugin)
            unknown = [impl_name for impl_name in dir(plugin) if self._is_unknown_hook(plugin, impl_name)]
            hints = []
            for hook in unknown:
                close = difflib.get_close_matches(hook, HOOK_NAMES, n=1)
                hints.append(f"{hook!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            self._fail(info, f"implements unknown hook {', '.join(hints) or str(exc)}; known hooks: "
                             f"{', '.join(HOOK_NAMES)}")
            return False
        info.hooks = sorted(impl.name for impl in self.pm.get_hookcallers(plugin) or [])
        return True

    def _is_unknown_hook(self, plugin: object, attr: str) -> bool:
        fn = getattr(plugin, attr, None)
        return callable(fn) and hasattr(fn, f"{hookspecs.PROJECT}_impl") and attr not in HOOK_NAMES

    def unregister_plugin(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.plugins.pop(name, None)
        self._collected = False

    # ----------------------------------------------------------------------------- collecting
    def _collect(self) -> None:
        if self._collected:
            return
        self._stylizers, self._encoders, self._conflicts = {}, {}, {}
        for info in self.plugins.values():
            info.stylizers, info.encoders = [], []
            # Errors from an earlier collection are recomputed below; load and command errors stay.
            info.errors = [e for e in info.errors if not e.startswith(("hook register_stylizers", "hook register_encoders"))]
        self._collected = True  # set first: a strict failure below must not leave a half-built cache retried forever
        self._run_register_hook("register_stylizers", "stylizer", self._stylizers, StylizerSpec)
        self._run_register_hook("register_encoders", "encoder", self._encoders, EncoderSpec)

    def _run_register_hook(self, hook_name: str, kind: str, table: dict, spec_type: type) -> None:
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order (pluggy calls LIFO; we want first-come)
            plugin_name = impl.plugin_name
            info = self.plugins.setdefault(plugin_name, PluginInfo(plugin_name))

            def register(spec: Any, _plugin: str = plugin_name, _info: PluginInfo = info) -> None:
                if not isinstance(spec, spec_type):
                    raise PluginError(f"{hook_name} of plugin {_plugin!r} passed {type(spec).__name__}, "
                                      f"expected {spec_type.__name__}")
                if self.trace:
                    print(f"[nstzoo] {_plugin}.{hook_name} -> {kind} {spec.name!r}", file=sys.stderr)
                existing = table.get(spec.name)
                if existing is not None or (kind, spec.name) in self._conflicts:
                    owners = self._conflicts.setdefault((kind, spec.name), [existing.plugin] if existing else [])
                    owners.append(_plugin)
                    table.pop(spec.name, None)
                    message = (f"hook {hook_name}: {_conflict_text(kind, spec.name, owners)}" if len(set(owners)) == 1
                               else f"hook {hook_name}: duplicate {kind} name {spec.name!r} registered by plugins "
                                    f"{' and '.join(repr(o) for o in dict.fromkeys(owners))}")
                    for owner in owners:
                        owner_info = self.plugins.get(owner)
                        if owner_info is not None and message not in owner_info.errors:
                            owner_info.errors.append(message)
                    if self.strict:
                        raise PluginError(message)
                    return
                table[spec.name] = Registered(spec, _plugin)
                getattr(_info, f"{kind}s").append(spec.name)

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the others down
                if isinstance(exc, PluginError) and self.strict:
                    raise
                self._fail(info, f"hook {hook_name} raised {type(exc).__name__}: {exc}")

    # ----------------------------------------------------------------------------- queries
    def _lookup(self, kind: str, name: str) -> Any:
        self._collect()
        table = self._stylizers if kind == "stylizer" else self._encoders
        if (kind, name) in self._conflicts:
            owners = self._conflicts[(kind, name)]
            if len(set(owners)) == 1:  # one plugin's own bug: uninstalling "one of them" would make no sense
                raise PluginError(_conflict_text(kind, name, owners),
                                  hint=f"a bug in plugin {owners[0]!r}: its register hook must register each name once; "
                                       "report it to its author, or leave it out with NSTZOO_LOAD_PLUGINS")
            raise PluginError(f"{kind} name {name!r} is registered by several plugins: "
                              f"{' and '.join(repr(o) for o in dict.fromkeys(owners))}",
                              hint="uninstall one of them, or limit plugins with NSTZOO_LOAD_PLUGINS")
        if name not in table:
            raise UnknownNameError(kind, name, table, failed_plugins=self.failed_plugins(kind))
        return table[name]

    def failed_plugins(self, kind: str | None = None) -> list[str]:
        """Plugins that failed to import or to register (``kind``: only failures that could hide a name of it).

        Name conflicts and failing ``register_commands`` hooks do not count: such a plugin's names loaded.
        """
        self._collect()
        hooks = {"stylizer": ("hook register_stylizers raised",), "encoder": ("hook register_encoders raised",),
                 None: ("hook register_stylizers raised", "hook register_encoders raised")}[kind]
        prefixes = ("failed to import", "invalid hook implementation", "implements unknown hook", *hooks)
        return [info.name for info in self.plugins.values() if any(e.startswith(prefixes) for e in info.errors)]

    def stylizer(self, name: str) -> StylizerSpec:
        """The spec registered under ``name``; unknown names raise with the closest match."""
        return self._lookup("stylizer", name).spec

    def encoder(self, name: str) -> EncoderSpec:
        return self._lookup("encoder", name).spec

    def build_encoder(self, name: str, options: Mapping[str, Any] | None = None) -> StyleEncoder:
        """Encoder ``name`` built by its plugin's factory with ``options`` (no weights loaded).

        Raises:
            ConfigError: options the factory does not take, naming them and the encoder.
            PluginError: the factory raised, or returned something that is not a StyleEncoder.
        """
        from .contract import plugin_code
        from .errors import ConfigError

        registered = self._lookup("encoder", name)
        options = dict(options or {})
        with plugin_code(registered.plugin, name, "factory", kind="encoder"):
            try:
                model = registered.spec.factory(**options)
            except TypeError as exc:  # an option the factory does not take: the user's to fix
                raise ConfigError(f"encoder {name!r}: bad options {options!r} ({exc})",
                                  hint=f"`nstzoo encoders list --json` shows {name}'s options and defaults") from exc
        if not isinstance(model, StyleEncoder):
            raise PluginError(f"encoder {name!r} (plugin {registered.plugin!r}): its factory returned "
                              f"{type(model).__name__}, not a nstzoo.specs.StyleEncoder")
        return model

    def stylizer_plugin(self, name: str) -> str:
        return self._lookup("stylizer", name).plugin

    def encoder_plugin(self, name: str) -> str:
        return self._lookup("encoder", name).plugin

    def stylizers(self) -> dict[str, Registered[StylizerSpec]]:
        self._collect()
        return dict(sorted(self._stylizers.items()))

    def encoders(self) -> dict[str, Registered[EncoderSpec]]:
        self._collect()
        return dict(sorted(self._encoders.items()))

    @property
    def errors(self) -> list[tuple[str, str]]:
        """(plugin, message) for every problem seen while loading or collecting."""
        self._collect()
        return [(info.name, e) for info in self.plugins.values() for e in info.errors]

    def plugin_versions(self) -> dict[str, str | None]:
        return {name: info.version for name, info in sorted(self.plugins.items())}

    def register_commands(self, app: Any) -> None:
        """Let plugins add CLI commands; a plugin that raises is recorded, not fatal."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(app=app)
            except Exception as exc:  # noqa: BLE001
                info = self.plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
                self._fail(info, f"hook register_commands raised {type(exc).__name__}: {exc}")

    def parse_stylizer_list(self, text: str | Iterable[str]) -> list[str]:
        """``"neat,pama,sanet"`` -> validated, de-duplicated names (order kept)."""
        names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
        if not names:
            raise UnknownNameError("stylizer", "", self.stylizers(), failed_plugins=self.failed_plugins("stylizer"))
        for name in names:
            self.stylizer(name)
        return list(dict.fromkeys(names))


def _conflict_text(kind: str, name: str, owners: list[str]) -> str:
    """The message for one plugin registering the same name more than once."""
    times = "twice" if len(owners) == 2 else f"{len(owners)} times"
    return f"plugin {owners[0]!r} registers {kind} {name!r} {times}"


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset_registry(registry: Registry | None = None) -> None:
    """Drop (or replace) the process-wide registry; for tests and long-lived sessions."""
    global _REGISTRY
    _REGISTRY = registry


__all__ = ["Registry", "PluginInfo", "Registered", "get_registry", "reset_registry"]
