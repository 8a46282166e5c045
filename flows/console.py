"""What every CLI command module shares: the consoles, the common options, the error guard, config loading.

Command modules (:mod:`embedline.flows.commands`, ``manage``, ``deploy``, ``serve``) import this; only
:mod:`embedline.flows.cli` imports the command modules and registers their functions on the app.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:  # pydantic (config) loads only when a command runs: `embedline --help` stays fast
    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import Config

# the default params file (= embedline.tasks.config.PARAMS_FILE; a test keeps them equal)
PARAMS_FILE = "params.yaml"

EPHEMERAL_TIMEOUT_S = 180  # Prefect's default (20 s) is too short on a busy 2-core machine


def quiet_prefect() -> None:
    """Environment defaults applied before Prefect is imported by any command: no telemetry (no
    banner, no "Failed to send telemetry" offline) and a patient temporary-server start (issue 14
    row 17). Explicit user settings win."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_TIMEOUT_S))


quiet_prefect()

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a param: section.key=value (repeatable)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show the stages' log lines.")]
ParamsOpt = Annotated[
    Path, typer.Option("--params", help="params.yaml to use; its folder is the project root.")
]


def guard(fn: Callable[[], T]) -> T:
    """Run a command body: config errors exit 2, other failures exit 1, both with one clear line."""
    try:
        return fn()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow] (completed embedding batches are cached)")
        raise typer.Exit(130) from None
    except Exception as exc:
        from embedline.tasks.config import ConfigError

        if isinstance(exc, ConfigError):
            err.print(f"[red]config error:[/red] {exc}")
            raise typer.Exit(2) from None
        if os.environ.get("EMBEDLINE_DEBUG"):
            raise
        err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None


def load(params: Path, overrides: list[str] | None, source: str | None = None) -> tuple[Config, Artifacts]:
    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import ConfigError, load_config

    if not params.exists() and params != Path(PARAMS_FILE):  # an explicit --params must exist
        raise ConfigError(f"--params {params}: no such file")
    items = list(overrides or [])
    if source is not None:
        items.append(f"source={json.dumps(source)}")
    cfg = load_config(params, items)
    return cfg, Artifacts(params.resolve().parent)


def verbose_logs(on: bool) -> None:
    """``-v``: the stages' INFO log lines on stderr (rich handler; warnings are always shown)."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("embedline")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=err, show_path=False, rich_tracebacks=False))
    logger.setLevel(logging.INFO if on else logging.WARNING)


def print_stats(title: str, stats: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for k, v in stats.items():
        table.add_row(str(k), str(v))
    out.print(table)
