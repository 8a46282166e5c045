"""Vector-set management commands: plan, verify, promote, export, import, eval, finetune, split-queries."""

from __future__ import annotations

import json
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Does the alias serve the fingerprint the workspace records, and does that collection hold
    the current artifacts (missing, orphans, stale, dims)? Exit 1 when not ok."""

    def body() -> None:
        cfg, art = load(params, set_)
        from embedline.tasks.vectorsets.verify import verify as do_verify

        report = do_verify(cfg, art, repair=repair, allow_mass_delete=allow_mass_delete)
        summary = report.summary()
        if as_json:
            out.print_json(json.dumps(summary))
        else:
            print_stats("embedline verify", summary)
        if not report.ok:
            if not as_json:
                err.print(f"[red]not ok:[/red] {report.fix}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    guard(body)


def promote(
    fingerprint: Annotated[str | None, typer.Argument(
        help="Vector set to serve: a fingerprint (or its collection name). Default: the workspace's.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Skip the quality gate.")] = False,
    allow_mass_delete: Annotated[bool, typer.Option("--allow-mass-delete")] = False,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Serve a vector set: quality gate, then point the alias at it (older versions retained).

    Without FINGERPRINT it serves the set the workspace records (built first from the artifacts if
    the store lacks it, e.g. after `dvc pull`; nothing is embedded)."""

    def body() -> None:
        cfg, art = load(params, set_)
        from embedline.tasks.summary import promote_line
        from embedline.tasks.vectorsets.promote import promote as do_promote

        stats = do_promote(cfg, art, fingerprint, force=force, allow_mass_delete=allow_mass_delete)
        out.print(promote_line(stats), highlight=False, soft_wrap=True)

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
        from embedline.tasks.vectorsets.transfer import export_points

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
        from embedline.tasks.vectorsets.transfer import import_points

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


def finetune(
    train: Annotated[bool, typer.Option("--train/--no-train", help="Train (--no-train: use the model in finetune.output).")] = True,
    promote: Annotated[
        bool, typer.Option("--promote", help="Build the model's shadow vector set; promote it if the quality gate passes.")
    ] = False,
    set_: SetOpt = None,
    params: ParamsOpt = Path(PARAMS_FILE),
) -> None:
    """Fine-tune the embedding model on the corpus (finetune.* params); optionally promote it."""

    def body() -> None:
        import os

        cfg, art = load(params, set_)
        if os.environ.get("PREFECT_API_URL"):
            from embedline.flows.finetune import finetune_flow

            result = finetune_flow(params=cfg, root=str(art.root), train_model=train, promote_model=promote)
        else:
            result = {}
            if train:
                from embedline.tasks.pipeline import run_stage

                result["finetune"] = run_stage("finetune", cfg, art, force=True)
            if promote:
                from embedline.tasks.finetune.lifecycle import serve_finetuned

                result["promote"] = serve_finetuned(cfg, art)
        _print_finetune(result)
        if promote and not result["promote"]["promoted"]:
            raise typer.Exit(1)

    guard(body)


def _print_finetune(result: dict[str, Any]) -> None:
    stats = result.get("finetune")
    if stats:
        print_stats("embedline finetune", {k: v for k, v in stats.items()
                                           if not k.startswith(("base_", "finetuned_", "delta_"))})
        if "finetuned_ndcg@10" in stats:
            _print_eval({"base": {m: stats[f"base_{m}"] for m in ("ndcg@10", "mrr@10", "recall@100")},
                         "fine-tuned": {m: stats[f"finetuned_{m}"] for m in ("ndcg@10", "mrr@10", "recall@100")}})
    if "promote" in result:
        p = result["promote"]
        print_stats("fine-tuned vector set: " + ("PROMOTED" if p["promoted"] else "REFUSED (alias unchanged)"),
                    {k: v for k, v in p.items() if k != "reason"})
        if p.get("reason"):
            err.print(f"[yellow]{p['reason']}[/yellow]")


def split_queries(
    src: Annotated[Path, typer.Argument(help="A BEIR-layout folder (queries.jsonl + qrels/).")],
    dst: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write the split collection to.")],
    train_fraction: Annotated[float, typer.Option(help="Share of judged queries for training.")] = 0.6,
    seed: Annotated[int, typer.Option(help="Seed of the (deterministic) assignment.")] = 0,
    split: Annotated[
        str | None, typer.Option(help="Qrels split of SRC to split (default: test, else the only one); "
                                      "`--split train` carves a validation split out of a train split.")
    ] = None,
) -> None:
    """Split a BEIR collection's queries by id into qrels/train.tsv + qrels/test.tsv (corpus kept)."""

    def body() -> None:
        from embedline.tasks.finetune.split import split_queries as do_split

        print_stats("embedline split-queries",
                    do_split(src, dst, train_fraction=train_fraction, seed=seed, split=split))

    guard(body)
