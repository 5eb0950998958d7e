"""Errors a user can act on.

Every error that reaches the command line derives from :class:`NstzooError`; the CLI prints its
message and ``hint`` (the command that fixes it) and exits with status 2, without a traceback
unless ``NSTZOO_DEBUG=1``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NstzooError(Exception):
    """Base class for errors caused by input, configuration or environment, not by a bug."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UnknownNameError(NstzooError, KeyError):
    """A stylizer, encoder or other registered name that does not exist."""

    def __init__(self, kind: str, name: str, known: Iterable[str], failed_plugins: Iterable[str] = ()):
        known = sorted(known)
        failed = sorted(failed_plugins)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        message = f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}"
        hint = f"did you mean {close[0]!r}?" if close else f"run `nstzoo {kind}s list`"
        if failed:
            # A close match among the names that did load may be the wrong guess: the name the user
            # typed may belong to a plugin that is installed but broken, so say that first.
            who = (f"plugin {failed[0]!r} failed to load and may have provided it" if len(failed) == 1 else
                   f"plugins {', '.join(repr(f) for f in failed)} failed to load and may have provided it")
            hint = f"{who}; see `nstzoo plugins`" + (f" (or did you mean {close[0]!r}?)" if close else "")
        super().__init__(message, hint)
        self.kind, self.name, self.known, self.close_match = kind, name, known, (close[0] if close else None)
        self.failed_plugins = failed

    __str__ = NstzooError.__str__


class PluginError(NstzooError):
    """A plugin failed to load, registered a bad or duplicate name, or implements an unknown hook."""


class PluginCodeError(PluginError):
    """Code inside a plugin (factory, forward, import_official, locate_official) raised an exception."""


class StylizerOutputError(NstzooError):
    """A stylizer returned an output that breaks the contract (shape, non-finite, out of [0, 1])."""


class ContractError(NstzooError):
    """:func:`nstzoo.testing.check_stylizer` / ``check_encoder`` found contract violations.

    Attributes:
        subject: the stylizer or encoder name checked.
        failures: one line per failed check.
    """

    def __init__(self, message: str, hint: str | None = None, *, subject: str = "", failures: list[str] | None = None):
        super().__init__(message, hint)
        self.subject = subject
        self.failures = list(failures or [])


class WeightsError(NstzooError):
    """Weights are missing, unsafe, corrupt, or do not match the architecture."""


class ConfigError(NstzooError):
    """A configuration file or override names a bad key or value."""


class DataError(NstzooError):
    """An input image or folder cannot be used."""


def close_match_hint(name: str, known: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest of ``known``, or None."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else None
