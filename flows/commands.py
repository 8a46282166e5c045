"""Run commands: ingest (a Prefect flow run, or the same DAG in-process), stage (one DVC stage), search, summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from embedline.flows.console import (
    PARAMS_FILE,
    ParamsOpt,
    SetOpt,
    VerboseOpt,
    err,
    guard,
    load,
    out,
    print_stats,
    verbose_logs,
)


def ingest(
    source: Annotated[str | None, typer.Argument(help="Folder to ingest (default: params source).")] = None,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; write nothing to Qdrant.")] = False,
    allow_mass_delete: Annotated[bool, typer.Option("--allow-mass-delete")] = False,
    runner: Annotated[str | None, typer.Option(help="Task runner for the embed fan-out: thread | dask.")] = None,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Run the evaluate stage.")] = True,
    prefect: Annotated[
        bool | None,
        typer.Option("--prefect/--no-prefect", help="Run as a Prefect flow (default: when PREFECT_API_URL "
                     "is set; without a server, a temporary one is started). --no-prefect: in-process."),
    ] = None,
    verbose: VerboseOpt = False,
    full: Annotated[bool, typer.Option("--full", help="Ignore the ledgers: re-load and re-chunk everything.")] = False,
    promote: Annotated[bool, typer.Option(
        "--promote", help="Serve the built set even with --set/SOURCE overrides (after the quality gate).")] = False,
) -> None:
    """Run the ingest DAG: a Prefect flow run with a server, else in-process (no server wait).
    With overrides it builds a shadow set; the alias moves only for params.yaml as is (or --promote)."""

    def body() -> None:
        items = list(set_ or [])
        if full:
            items.append("run.full_rebuild=true")
        if runner:
            items.append(f"run.runner={runner}")
        cfg, art = load(params, items, source)
        from embedline.tasks.preflight import check_ready

        check_ready(cfg, art)  # before Prefect starts: a bad value fails in one line, in a second
        verbose_logs(verbose)
        from embedline.flows.inprocess import quiet_prefect, run_inprocess, use_prefect
        from embedline.flows.reporters import terminal_progress

        kwargs: dict[str, Any] = {"dry_run": dry_run, "allow_mass_delete": allow_mass_delete,
                                  "evaluate": evaluate, "promote": promote}
        if use_prefect(cfg, prefect):
            quiet_prefect()
            if not os.environ.get("PREFECT_API_URL"):
                err.print("no PREFECT_API_URL: starting Prefect's temporary server (up to "
                          f"{os.environ['PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS']} s; "
                          "`make serve` keeps one running, --no-prefect skips it)")
            from embedline.flows.ingest import ingest as ingest_flow

            with terminal_progress(err):
                run = ingest_flow(params=cfg, root=str(art.root), **kwargs)
        else:
            with terminal_progress(err):
                run = run_inprocess(cfg, str(art.root), **kwargs)
        if dry_run:
            print_stats("embedline ingest --dry-run (nothing written)", run["plan"])
            return
        from embedline.tasks.summary import summary_rows

        print_stats("embedline ingest", dict(summary_rows(run)))
        from embedline.tasks.summary import promote_line

        out.print(promote_line(run.get("promote", {})), highlight=False, soft_wrap=True)

    guard(body)


def stage(
    name: Annotated[str, typer.Argument(help="preprocess | chunk | embed | dedupe | upsert | evaluate")],
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
    full: Annotated[bool, typer.Option("--full", help="Ignore the ledgers: re-load and re-chunk everything.")] = False,
) -> None:
    """Run one stage (what dvc.yaml calls). As a Prefect flow only when PREFECT_API_URL is set."""

    def body() -> None:
        from embedline.tasks.pipeline import STAGES, UnknownStageError, run_stage

        if name not in STAGES:
            from embedline.tasks.config import ConfigError

            raise ConfigError(str(UnknownStageError(name)))
        cfg, art = load(params, [*(set_ or []), *(["run.full_rebuild=true"] if full else [])])
        from embedline.tasks.preflight import check_ready

        check_ready(cfg, art, source=name == "preprocess")
        from embedline.flows.reporters import terminal_progress

        options: dict[str, object] = {}
        if name == "promote":  # build vs promote: only the recorded configuration moves the alias
            from embedline.tasks.vectorsets.promote import serving_decision

            reason = serving_decision(cfg, art.root, overrides=bool(set_))
            options = {"promote_now": reason is None, "reason": reason}
        if os.environ.get("PREFECT_API_URL") and not options:
            from embedline.flows.ingest import stage_flow

            with terminal_progress(err):
                stats = stage_flow(name=name, params=cfg, root=str(art.root))
        else:
            with terminal_progress(err):
                stats = run_stage(name, cfg, art, **options)
        from embedline.tasks.summary import one_line, promote_line

        out.print(promote_line(stats) if name == "promote" else one_line(name, stats), highlight=False,
                  soft_wrap=True)

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
    # the body is Typer-free: a plain `embedline search ...` runs it before the Typer app is built
    from embedline.flows.lean import run_search

    guard(lambda: run_search(query, k, set_, params, as_json, hybrid, chunks))


def summary(
    query: Annotated[str | None, typer.Option(help="Example query whose top hit is shown.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Wall time to report.")] = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """What the store serves now (read live) and the recorded run's headline metrics (what `make run` shows)."""

    def body() -> None:
        cfg, art = load(params, None)
        from embedline.tasks.records import read_json
        from embedline.tasks.summary import HEADLINE_FILE
        from embedline.tasks.vectorsets.verify import served_state

        state = served_state(cfg, art)  # read live from the store, never from committed numbers
        rows: dict[str, object] = {k.replace("_", " "): v for k, v in state.items()}
        headline = art.metrics / HEADLINE_FILE
        if headline.exists():  # the recorded run's numbers, labelled as such
            for key, value in read_json(headline).items():
                rows[f"{key} (recorded run)"] = value
        if state["served_collection"] is None:
            err.print(f"[yellow]no vector set is served[/yellow]: the store at {cfg.qdrant.url or cfg.qdrant.path} "
                      f"has no alias {cfg.qdrant.collection!r}. Build and serve one with `dvc repro` "
                      "(or `embedline promote` after `dvc pull`).")
        if seconds is not None:
            rows["wall time (s)"] = round(seconds, 1)
        if query and state["served_collection"] is not None:
            from embedline.tasks.vectorsets.search import search as do_search

            hits = do_search(cfg, art, query, 1)
            rows["example query"] = query
            rows["top hit"] = f"{hits[0].source} ({hits[0].score:.3f})" if hits else "(none)"
        print_stats("embedline run summary", rows)

    guard(body)
