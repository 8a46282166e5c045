"""The `embedline` command line: ingest, stage, search, plan, verify, export, import, eval, serve."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from tasks.artifacts import Artifacts
from tasks.config import PARAMS_FILE, Config, ConfigError, load_config

app = typer.Typer(
    name="embedline",
    help="Embedding ingestion: preprocess -> chunk -> embed -> dedupe -> upsert (Qdrant).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
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


def _guard(fn: Callable[[], T]) -> T:
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


def _load(params: Path, overrides: list[str] | None, source: str | None = None) -> tuple[Config, Artifacts]:
    items = list(overrides or [])
    if source is not None:
        items.append(f"source={json.dumps(source)}")
    cfg = load_config(params, items)
    return cfg, Artifacts(params.resolve().parent)


def _print_stats(title: str, stats: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for k, v in stats.items():
        table.add_row(str(k), str(v))
    out.print(table)


@app.command()
def ingest(
    source: Annotated[str | None, typer.Argument(help="Folder to ingest (default: params source).")] = None,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; write nothing to Qdrant.")] = False,
    allow_mass_delete: Annotated[bool, typer.Option("--allow-mass-delete")] = False,
    runner: Annotated[str | None, typer.Option(help="Task runner for the embed fan-out: thread | dask.")] = None,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Run the evaluate stage.")] = True,
) -> None:
    """Run the full `ingest` Prefect flow."""

    def body() -> None:
        items = list(set_ or [])
        if runner:
            items.append(f"run.runner={runner}")
        cfg, art = _load(params, items, source)
        from flows.ingest import ingest as ingest_flow

        run = ingest_flow(
            params=cfg, root=str(art.root), dry_run=dry_run,
            allow_mass_delete=allow_mass_delete, evaluate=evaluate,
        )
        if dry_run:
            _print_stats("embedline ingest --dry-run (nothing written)", run["plan"])
            return
        from tasks.summary import summary_rows

        _print_stats("embedline ingest", dict(summary_rows(run)))

    _guard(body)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="preprocess | chunk | embed | dedupe | upsert | evaluate")],
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Run one stage (what dvc.yaml calls). As a Prefect flow only when PREFECT_API_URL is set."""

    def body() -> None:
        from tasks.pipeline import STAGES, UnknownStageError, run_stage

        if name not in STAGES:
            raise ConfigError(str(UnknownStageError(name)))
        cfg, art = _load(params, set_)
        if os.environ.get("PREFECT_API_URL"):
            from flows.ingest import stage_flow

            stats = stage_flow(name=name, params=cfg, root=str(art.root))
        else:
            stats = run_stage(name, cfg, art)
        from tasks.summary import one_line

        out.print(one_line(name, stats))

    _guard(body)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Text to search for.")],
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 5,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON lines.")] = False,
    hybrid: Annotated[
        bool, typer.Option("--hybrid", help="Dense + BM25 sparse fused by RRF (needs qdrant.sparse=true).")
    ] = False,
) -> None:
    """Search the live collection: score, source and a snippet per hit."""

    def body() -> None:
        cfg, art = _load(params, set_)
        from tasks.upsert import search as do_search

        hits = do_search(cfg, art, query, k, mode="hybrid" if hybrid else "dense")
        if as_json:
            for h in hits:
                out.print_json(json.dumps({"score": h.score, "source": h.source, "text": h.text}))
            return
        out.print(f"[bold]top {len(hits)} for[/bold] {query!r}")
        for rank, h in enumerate(hits, start=1):
            out.print(f"{rank:>2}. [cyan]{h.score:.3f}[/cyan]  [bold]{h.source}[/bold]")
            out.print("    " + " ".join(h.text.split())[:200], highlight=False, soft_wrap=True)

    _guard(body)


@app.command()
def summary(
    query: Annotated[str | None, typer.Option(help="Example query whose top hit is shown.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Wall time to report.")] = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Print the last run's summary from data/metrics (what `make run` shows)."""

    def body() -> None:
        cfg, art = _load(params, None)
        from tasks.records import read_json
        from tasks.summary import summary_rows

        stages = {
            p.stem: read_json(p) for p in sorted(art.metrics.glob("*.json")) if p.is_file()
        }
        rows = dict(summary_rows(stages))
        if seconds is not None:
            rows["wall time (s)"] = round(seconds, 1)
        if query:
            from tasks.upsert import search as do_search

            hits = do_search(cfg, art, query, 1)
            rows["example query"] = query
            rows["top hit"] = f"{hits[0].source} ({hits[0].score:.3f})" if hits else "(none)"
        _print_stats("embedline run summary", rows)

    _guard(body)


def main() -> None:
    """Console-script entry point."""
    from flows import commands  # noqa: F401  (registers plan/verify/export/import/eval/serve)

    app()


if __name__ == "__main__":  # `python -m flows.cli`: run the registered app of the imported module
    from flows.cli import main as _main

    _main()
