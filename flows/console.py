"""What every CLI command module shares: the consoles, the common options, the error guard, config loading.

Command modules (:mod:`embedline.flows.commands`, ``manage``, ``deploy``, ``serve``) import this; only
:mod:`embedline.flows.cli` imports the command modules and registers their functions on the app.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import PARAMS_FILE, Config, ConfigError, load_config

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a param: section.key=value (repeatable)."),
]
ParamsOpt = Annotated[
    Path, typer.Option("--params", help="params.yaml to use; its folder is the project root.")
]


def guard(fn: Callable[[], T]) -> T:
    """Run a command body: config errors exit 2, other failures exit 1, both with one clear line."""
    try:
        return fn()
    except ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow] (completed embedding batches are cached)")
        raise typer.Exit(130) from None
    except Exception as exc:
        if os.environ.get("EMBEDLINE_DEBUG"):
            raise
        err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None


def load(params: Path, overrides: list[str] | None, source: str | None = None) -> tuple[Config, Artifacts]:
    if not params.exists() and params != Path(PARAMS_FILE):  # an explicit --params must exist
        raise ConfigError(f"--params {params}: no such file")
    items = list(overrides or [])
    if source is not None:
        items.append(f"source={json.dumps(source)}")
    cfg = load_config(params, items)
    return cfg, Artifacts(params.resolve().parent)


def print_stats(title: str, stats: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for k, v in stats.items():
        table.add_row(str(k), str(v))
    out.print(table)
