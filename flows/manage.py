"""Vector-set management commands: plan, verify, export, import, eval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from embedline.flows.console import (
    PARAMS_FILE,
    ParamsOpt,
    SetOpt,
    err,
    guard,
    load,
    out,
    print_stats,
)


def _show_plan(result: dict[str, Any]) -> None:
    print_stats("embedline plan (nothing written)", result)
    if result.get("mass_delete"):
        err.print("[yellow]warning:[/yellow] this run would exceed qdrant.max_delete_fraction; "
                  "ingest will stop unless --allow-mass-delete is given")


def plan(
    source: Annotated[str | None, typer.Argument(help="Folder to plan for (default: params source).")] = None,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Print adds, updates, deletes and texts/tokens to embed for an ingest now; write nothing."""

    def body() -> None:
        cfg, art = load(params, set_, source)
        from embedline.tasks.plan import plan_ingest

        _show_plan(plan_ingest(cfg, art))

    guard(body)


def verify(
    repair: Annotated[bool, typer.Option("--repair", help="Fix what differs.")] = False,
    allow_mass_delete: Annotated[bool, typer.Option("--allow-mass-delete")] = False,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Diff the collection against the current artifacts (missing, orphans, stale, dims)."""

    def body() -> None:
        cfg, art = load(params, set_)
        from embedline.tasks.vectorsets.upsert import verify as do_verify

        report = do_verify(cfg, art, repair=repair, allow_mass_delete=allow_mass_delete)
        print_stats("embedline verify", report.summary())
        if not report.ok and not report.repaired:
            raise typer.Exit(1)

    guard(body)


def export_(
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="File to write (.jsonl or .parquet).")],
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl | parquet (default: by suffix).")] = None,
    with_vectors: Annotated[bool, typer.Option("--with-vectors", help="Include vectors.")] = False,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Write the live vector set, one record per point (id, payload, optional vector)."""

    def body() -> None:
        cfg, art = load(params, set_)
        from embedline.tasks.vectorsets.upsert import export_points

        n = export_points(cfg, art, out_path, fmt=fmt, with_vectors=with_vectors)  # type: ignore[arg-type]
        out.print(f"exported {n} points to {out_path}")

    guard(body)


def import_(
    in_path: Annotated[Path, typer.Argument(metavar="IN", help="A file written by `embedline export --with-vectors`.")],
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Load an exported vector set into the configured store (no re-embedding)."""

    def body() -> None:
        cfg, art = load(params, set_)
        from embedline.tasks.vectorsets.upsert import import_points

        n = import_points(cfg, art, in_path)
        out.print(f"imported {n} points into alias {cfg.qdrant.collection!r}")

    guard(body)


def eval_(
    dataset: Annotated[Path | None, typer.Option(help="A BEIR-layout folder to ingest and evaluate.")] = None,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Retrieval metrics for the live collection, or for a BEIR dataset in its own collection."""

    def body() -> None:
        cfg, art = load(params, set_)
        if dataset is None:
            from embedline.tasks.pipeline import run_stage

            print_stats("embedline eval", run_stage("evaluate", cfg, art))
            return
        from embedline.tasks.evaluate import evaluate_dataset

        workdir = art.root / "data" / "eval-runs" / dataset.resolve().name
        from embedline.flows.reporters import terminal_progress

        with terminal_progress(err):
            result = evaluate_dataset(cfg, dataset.resolve(), workdir)
        _print_eval(result)

    guard(body)


def _print_eval(result: dict[str, Any]) -> None:
    from rich.table import Table

    methods = {k: v for k, v in result.items() if isinstance(v, dict)}
    metrics = sorted({m for v in methods.values() for m in v if isinstance(v[m], int | float)})
    table = Table(title="retrieval quality")
    table.add_column("method")
    for m in metrics:
        table.add_column(m, justify="right")
    for name, vals in methods.items():
        table.add_row(name, *(f"{vals[m]:.4f}" if isinstance(vals.get(m), float) else str(vals.get(m, ""))
                              for m in metrics))
    out.print(table)
    rest = {k: v for k, v in result.items() if not isinstance(v, dict)}
    if rest:
        print_stats("run", rest)
