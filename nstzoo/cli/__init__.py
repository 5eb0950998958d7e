"""The ``nstzoo`` command line: one Typer app per command group, composed here.

Known errors (:class:`~nstzoo.errors.NstzooError`: unknown names, missing weights, bad config or
input) print a short message with a hint and exit with status 2; ``NSTZOO_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import typer

from ..errors import NstzooError


def build_app() -> typer.Typer:
    from . import data, encoders, plugins, search, stylize, stylizers, weights

    app = typer.Typer(name="nstzoo", no_args_is_help=True, pretty_exceptions_enable=False,
                      help="A plugin zoo of feed-forward neural style transfer and the ALADIN-NST style learner.",
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.command("plugins")(plugins.plugins)
    app.add_typer(stylizers.app, name="stylizers")
    app.add_typer(encoders.app, name="encoders")
    app.add_typer(weights.app, name="weights")
    app.add_typer(data.app, name="data")
    app.command("stylize")(stylize.stylize)
    search.register(app)  # index build|add, search
    # The learner's commands (train, testset, eval, embed, export, quickstart) arrive here through
    # register_commands, from the built-in plugins `learner` and `quickstart` (pyproject entry points).
    _add_plugin_commands(app)
    return app


def _add_plugin_commands(app: typer.Typer) -> None:
    from ..registry import get_registry

    try:
        get_registry().register_commands(app)
    except NstzooError as exc:  # strict mode: a plugin's command failed to register
        report_error(exc)
        raise SystemExit(2) from exc


def warn_broken_plugins(args: Sequence[str]) -> None:
    """One stderr line while any plugin failed to load, so a missing stylizer is never a mystery.

    Skipped for ``nstzoo plugins``, which prints the errors themselves.
    """
    from ..registry import get_registry
    from .common import err_console

    if list(args[:1]) == ["plugins"]:
        return
    registry = get_registry()
    with_errors = list(dict.fromkeys(plugin for plugin, _ in registry.errors))
    failed = registry.failed_plugins()
    parts = []
    for label, names in (("failed to load", [n for n in with_errors if n in failed]),
                         ("reported errors", [n for n in with_errors if n not in failed])):
        if names:
            parts.append(f"plugin{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)} {label}")
    if parts:
        err_console.print(f"warning: {'; '.join(parts)}; see `nstzoo plugins`", style="yellow", markup=False,
                          highlight=False, soft_wrap=True)


def report_error(exc: NstzooError) -> None:
    from .common import err_console

    err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; ``argv`` for tests (defaults to ``sys.argv[1:]``)."""
    debug = os.environ.get("NSTZOO_DEBUG", "") not in ("", "0")
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        app = build_app()
        warn_broken_plugins(args)
        app(args=args, prog_name="nstzoo")
    except NstzooError as exc:
        if debug:
            raise
        report_error(exc)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        sys.exit(130)
