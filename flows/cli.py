"""The `embedline` command line: every command is registered here, explicitly, in one table.

Command modules hold plain functions and import only :mod:`embedline.flows.console`; this module
imports them (layers point down) and adds them to the Typer app. A new command = a function in a
command module + one line in :data:`COMMANDS`.
"""

from __future__ import annotations

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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
