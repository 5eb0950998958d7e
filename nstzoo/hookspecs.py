"""The plugin contract.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, found through the
``nstzoo`` entry-point group. Built-in stylizers and encoders use exactly this path.

Example::

    from nstzoo import hookimpl, StylizerSpec

    @hookimpl
    def register_stylizers(register):
        register(StylizerSpec(name="mine", factory=MyNet, summary="...", paper="..."))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import typer

    from .specs import EncoderSpec, StylizerSpec

PROJECT = "nstzoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_stylizers(register: "Callable[[StylizerSpec], None]") -> None:
    """Register stylizers by calling ``register(StylizerSpec(...))`` once per method.

    Called once, when the registry first loads. A name already registered by another plugin is
    reported as a conflict naming both plugins; using that name is then an error.
    """


@hookspec
def register_encoders(register: "Callable[[EncoderSpec], None]") -> None:
    """Register style encoders by calling ``register(EncoderSpec(...))`` once per encoder.

    Same rules as :func:`register_stylizers`.
    """


@hookspec
def register_commands(app: "typer.Typer") -> None:
    """Add commands to the ``nstzoo`` command line.

    ``app`` is the root :class:`typer.Typer`; add commands with ``@app.command()`` or groups with
    ``app.add_typer(sub_app, name=...)``. Called when the CLI starts; an exception here is reported
    by ``nstzoo plugins`` and does not stop the CLI.
    """
