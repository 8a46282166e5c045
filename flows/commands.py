"""Run commands: ingest (the Prefect flow), stage (one DVC stage), search, summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from embedline.flows.console import ParamsOpt, SetOpt, guard, load, out, print_stats
from embedline.tasks.config import PARAMS_FILE, ConfigError


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
        cfg, art = load(params, items, source)
        from embedline.flows.ingest import ingest as ingest_flow

        run = ingest_flow(
            params=cfg, root=str(art.root), dry_run=dry_run,
            allow_mass_delete=allow_mass_delete, evaluate=evaluate,
        )
        if dry_run:
            print_stats("embedline ingest --dry-run (nothing written)", run["plan"])
            return
        from embedline.tasks.summary import summary_rows

        print_stats("embedline ingest", dict(summary_rows(run)))

    guard(body)


def stage(
    name: Annotated[str, typer.Argument(help="preprocess | chunk | embed | dedupe | upsert | evaluate")],
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Run one stage (what dvc.yaml calls). As a Prefect flow only when PREFECT_API_URL is set."""

    def body() -> None:
        from embedline.tasks.pipeline import STAGES, UnknownStageError, run_stage

        if name not in STAGES:
            raise ConfigError(str(UnknownStageError(name)))
        cfg, art = load(params, set_)
        if os.environ.get("PREFECT_API_URL"):
            from embedline.flows.ingest import stage_flow

            stats = stage_flow(name=name, params=cfg, root=str(art.root))
        else:
            stats = run_stage(name, cfg, art)
        from embedline.tasks.summary import one_line

        out.print(one_line(name, stats))

    guard(body)


def search(
    query: Annotated[str, typer.Argument(help="Text to search for.")],
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 5,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON lines.")] = False,
    hybrid: Annotated[
        bool, typer.Option("--hybrid", help="Dense + BM25 sparse fused by RRF (needs qdrant.sparse=true).")
    ] = False,
    chunks: Annotated[
        bool, typer.Option("--chunks", help="The raw chunk list instead of the best chunk per document.")
    ] = False,
) -> None:
    """Search the live collection: the best chunk per document (score, source, heading path, snippet)."""

    def body() -> None:
        cfg, art = load(params, set_)
        from embedline.tasks.vectorsets.upsert import search as do_search

        mode = "hybrid" if hybrid else "dense"
        if not chunks:
            _print_documents(cfg, art, query, k, mode, as_json)
            return
        hits = do_search(cfg, art, query, k, mode=mode)
        if as_json:
            for h in hits:
                out.print_json(json.dumps({"score": h.score, "source": h.source, "text": h.text}))
            return
        out.print(f"[bold]top {len(hits)} for[/bold] {query!r}")
        for rank, h in enumerate(hits, start=1):
            out.print(f"{rank:>2}. [cyan]{h.score:.3f}[/cyan]  [bold]{h.source}[/bold]")
            out.print("    " + " ".join(h.text.split())[:200], highlight=False, soft_wrap=True)

    guard(body)


def _print_documents(cfg: Any, art: Any, query: str, k: int, mode: str, as_json: bool) -> None:
    """Grouped output: one line per document with its best chunk (issue 15: search that answers)."""
    from embedline.tasks.vectorsets.upsert import search_documents

    res = search_documents(cfg, art, query, k, mode=mode)  # type: ignore[arg-type]
    if as_json:
        for d in res.documents:
            row = {"collection": res.collection, "fingerprint": res.fingerprint, **d.as_dict()}
            out.print(json.dumps(row, ensure_ascii=False), markup=False, highlight=False, soft_wrap=True)
        return
    out.print(f"[bold]top {len(res.documents)} documents for[/bold] {query!r}")
    for rank, d in enumerate(res.documents, start=1):
        more = f"  ({d.chunks} chunks)" if d.chunks > 1 else ""
        out.print(f"{rank:>2}. [cyan]{d.score:.3f}[/cyan]  [bold]{d.doc}[/bold]{more}", highlight=False)
        if d.heading_path:
            out.print("    § " + " > ".join(d.heading_path), highlight=False, soft_wrap=True)
        out.print("    " + " ".join(d.snippet.split())[:200], highlight=False, soft_wrap=True)


def summary(
    query: Annotated[str | None, typer.Option(help="Example query whose top hit is shown.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Wall time to report.")] = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Print the last run's summary from data/metrics (what `make run` shows)."""

    def body() -> None:
        cfg, art = load(params, None)
        from embedline.tasks.records import read_json
        from embedline.tasks.summary import summary_rows

        stages = {
            p.stem: read_json(p) for p in sorted(art.metrics.glob("*.json")) if p.is_file()
        }
        rows = dict(summary_rows(stages))
        if seconds is not None:
            rows["wall time (s)"] = round(seconds, 1)
        if query:
            from embedline.tasks.vectorsets.upsert import search as do_search

            hits = do_search(cfg, art, query, 1)
            rows["example query"] = query
            rows["top hit"] = f"{hits[0].source} ({hits[0].score:.3f})" if hits else "(none)"
        print_stats("embedline run summary", rows)

    guard(body)
