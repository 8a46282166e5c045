"""The `embedline` command line: every command is registered here, explicitly, in one table.

Command modules hold plain functions and import only :mod:`embedline.flows.console`; this module
imports them (layers point down) and adds them to the Typer app. A new command = a function in a
command module + one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable
from typing import Any

import typer

from embedline.flows import commands, deploy, manage, serve

COMMANDS: list[tuple[str, Callable[..., Any]]] = [
    ("ingest", commands.ingest),
    ("stage", commands.stage),
    ("search", commands.search),
    ("summary", commands.summary),
    ("plan", manage.plan),
    ("verify", manage.verify),
    ("promote", manage.promote),
    ("export", manage.export_),
    ("import", manage.import_),
    ("eval", manage.eval_),
    ("finetune", manage.finetune),
    ("split-queries", manage.split_queries),
    ("serve", serve.serve),
    ("deploy", deploy.deploy),
    ("notify", deploy.notify),
]


def build_app() -> typer.Typer:
    """The Typer app with every command of :data:`COMMANDS`."""
    app = typer.Typer(
        name="embedline",
        help="Embedding ingestion: preprocess -> chunk -> embed -> dedupe -> upsert (Qdrant).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name, fn in COMMANDS:
        app.command(name)(fn)
    return app


app = build_app()


class _DeferredMeta(type):
    """A class standing in for a rich class that ``typer.rich_utils`` imports at module level but uses
    only on paths embedline's help does not take (Markdown markup, pretty tracebacks): calling it or
    reading an attribute imports the real one. A class (not an object) so ``X | Text`` annotations work."""

    _module: str

    def _real(cls) -> Any:
        return getattr(importlib.import_module(cls._module), cls.__name__)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    def __getattr__(cls, attr: str) -> Any:
        return getattr(cls._real(), attr)


LAZY_RICH = (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback"))


def import_lean_rich_help() -> None:
    """Import ``typer.rich_utils`` (help rendering) without ``rich.markdown`` (markdown-it) and
    ``rich.traceback`` (pygments): about a third of ``embedline --help``'s start-up. Placeholder
    modules stand in while it imports and are removed right after, so a later real import works."""
    if "typer.rich_utils" in sys.modules:
        return
    placeholders = []
    for module, name in LAZY_RICH:
        if module not in sys.modules:
            stand_in = types.ModuleType(module)
            setattr(stand_in, name, _DeferredMeta(name, (), {"_module": module}))
            sys.modules[module] = stand_in
            placeholders.append(module)
    try:
        importlib.import_module("typer.rich_utils")
    finally:
        for module in placeholders:
            sys.modules.pop(module, None)


def main() -> None:
    """Console-script entry point."""
    # pydantic scans every installed distribution's entry points for its plugins on first use
    # (0.1-0.2 s of each command's start); embedline uses none. PYDANTIC_DISABLE_PLUGINS="" (empty)
    # in the environment turns the scan back on.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if len(sys.argv) < 2 or {"--help", "-h"} & set(sys.argv[1:]):
        import_lean_rich_help()
    app()


if __name__ == "__main__":
    main()
