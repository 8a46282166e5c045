"""What every CLI command module shares: the consoles, the common options, the error guard, config loading.

Command modules (:mod:`embedline.flows.commands`, ``manage``, ``deploy``, ``serve``) import this; only
:mod:`embedline.flows.cli` imports the command modules and registers their functions on the app.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

# consoles, config loading and error reports live in the Typer-free module (`embedline search`
# runs before the Typer app is built); re-exported here for the command modules
from embedline.flows.lean import PARAMS_FILE, err, load, out, report_error

__all__ = ["PARAMS_FILE", "ParamsOpt", "SetOpt", "VerboseOpt", "err", "guard", "load", "out", "print_stats",
           "quiet_prefect", "verbose_logs"]

EPHEMERAL_TIMEOUT_S = 180  # Prefect's default (20 s) is too short on a busy 2-core machine


def quiet_prefect() -> None:
    """Environment defaults applied before Prefect is imported by any command: no telemetry (no
    banner, no "Failed to send telemetry" offline) and a patient temporary-server start (issue 14
    row 17). Explicit user settings win."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_TIMEOUT_S))


quiet_prefect()

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
    """Run a command body: config errors exit 2, other failures exit 1, both with one clear line
    (:func:`embedline.flows.lean.report_error`)."""
    try:
        return fn()
    except typer.Exit:
        raise
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 every failure becomes one line + exit code
        raise typer.Exit(report_error(exc)) from None


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
