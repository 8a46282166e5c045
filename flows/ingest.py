"""The `ingest` flow: preprocess -> chunk -> embed -> dedupe -> upsert (-> evaluate) -> promote.

The flow body is the DAG and nothing else; every stage is a thin task around a pure function in
`tasks/`. Parameters are pydantic (`Config`), so the Prefect UI renders params.yaml as a form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, unmapped

from embedline.flows import stages
from embedline.flows.reporters import flow_progress
from embedline.flows.runtime import (
    embed_runner,
    ingest_lock,
    record_after_swap,
    report_failure,
    resolve_config,
)
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.pipeline import INGEST_STAGES, run_stage
from embedline.tasks.preflight import check_ready
from embedline.tasks.vectorsets.promote import serving_decision


@flow(name="embed-fanout", log_prints=True)
def embed_fanout(cfg: Config, root: str) -> list[dict[str, Any]]:
    """Embed every shard (on the flow's task runner: threads by default, Dask with --runner dask)."""
    shards = stages.plan_embed_shards(cfg, root)
    futures = stages.embed_shard.map(unmapped(cfg), unmapped(root), shards)
    return stages.track(futures, stages.embed_progress(len(shards)))


@flow(name="vector-fanout", log_prints=True)
def vector_fanout(cfg: Config, root: str) -> list[dict[str, Any]]:
    """Write one vector shard per chunk shard from the cache (on the cluster with --runner dask)."""
    indexes = stages.plan_vector_shards(root)
    futures = stages.vector_shard.map(unmapped(cfg), unmapped(root), indexes)
    return [dict(r) for r in stages.track(futures, lambda done, of: None)]


@flow(name="preprocess-fanout", log_prints=True)
def preprocess_fanout(cfg: Config, root: str) -> dict[str, Any]:
    """Preprocess with the loaders fanned out on the flow's task runner (Dask with --runner dask):
    the walk, the ledger and the shard merge stay in this flow, so the shards are the same bytes."""

    def load_many(params: Any, batches: list[Any]) -> list[Any]:
        return [f.result() for f in stages.load_files.map(unmapped(params), batches)]

    stats = run_stage("preprocess", cfg, Artifacts(Path(root)), load_many=load_many)
    stages.preprocess_report(root, stats)
    return stats


@flow(name="chunk-fanout", log_prints=True)
def chunk_fanout(cfg: Config, root: str) -> dict[str, Any]:
    """Chunk every document shard on the flow's task runner (Dask with --runner dask)."""
    plan = stages.plan_chunk_shards(cfg, root)
    futures = stages.chunk_shard.map(unmapped(cfg), unmapped(root), list(plan.shards), unmapped(plan.full))
    results = [dict(r) for r in stages.track(futures, lambda done, of: None)]
    return stages.chunk_finalize(cfg, root, plan, results)


@flow(name="ingest", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def ingest(
    params: Config | None = None,
    overrides: list[str] | None = None,
    root: str = ".",
    dry_run: bool = False,
    allow_mass_delete: bool = False,
    evaluate: bool = True,
    promote: bool = False,
) -> dict[str, dict[str, Any]]:
    """Ingest `params.source` into the Qdrant alias `params.qdrant.collection`.

    Args:
        params: the whole configuration; default: params.yaml in `root`.
        overrides: `section.key=value` strings applied on top (as `--set` on the CLI).
        root: the project folder (params.yaml, data/, dvc.yaml).
        dry_run: only plan: log adds/updates/deletes and texts to embed; write nothing.
        allow_mass_delete: let a run delete more than `qdrant.max_delete_fraction` of the set.
        evaluate: run the evaluate stage (quality metrics) after upsert.
        promote: serve the built vector set even when the run is not the recorded configuration
            (`params` or `overrides` differ from params.yaml); it still passes the quality gate.
    """
    root = str(Path(root).resolve())
    cfg = resolve_config(root, params, overrides)
    check_ready(cfg, Artifacts(Path(root)))  # UI / deployment runs: fail before any work
    if dry_run:
        return {"plan": stages.plan(cfg, root)}
    names = [*INGEST_STAGES, "evaluate"] if evaluate else list(INGEST_STAGES)
    with ingest_lock(root), flow_progress(names):  # one progress artifact on this (main) flow run
        run: dict[str, dict[str, Any]] = {}
        # Stages exchange files, not results: `wait_for` draws each edge of the DAG in the UI.
        if cfg.run.runner == "dask":  # loaders fanned out on the cluster; threads gain nothing (GIL)
            run["preprocess"] = dict(preprocess_fanout.with_options(task_runner=embed_runner(cfg))(cfg, root))
        else:
            run["preprocess"] = stages.preprocess(cfg, root)
        if cfg.run.runner == "dask":  # shard-parallel on the cluster; threads gain nothing (GIL)
            run["chunk"] = dict(chunk_fanout.with_options(task_runner=embed_runner(cfg))(cfg, root))
        else:
            run["chunk"] = stages.chunk(cfg, root, wait_for=[run["preprocess"]])
        shard_stats = embed_fanout.with_options(task_runner=embed_runner(cfg))(cfg, root)
        # fresh copies: a task input linked to a subflow result (input_type "flow_run") breaks the
        # Task Runs tab of Prefect 3.8.8's UI ("Invalid TaskInputResponse")
        vectors = None
        if cfg.run.runner == "dask":  # the vector shards too, one task per chunk shard
            vectors = vector_fanout.with_options(task_runner=embed_runner(cfg))(cfg, root)
        run["embed"] = stages.embed(cfg, root, [dict(s) for s in shard_stats], vectors, wait_for=[run["chunk"]])
        run["dedupe"] = stages.dedupe(cfg, root, wait_for=[run["embed"]])
        run["upsert"] = stages.upsert(cfg, root, allow_mass_delete, wait_for=[run["dedupe"]])
        last = run["upsert"]
        if evaluate:
            run["evaluate"] = stages.evaluate(cfg, root, wait_for=[run["upsert"]])
            last = run["evaluate"]
        # build vs promote: only the recorded configuration (or --promote) moves the alias
        reason = serving_decision(cfg, Path(root))
        run["promote"] = stages.promote(cfg, root, promote or reason is None, reason, allow_mass_delete,
                                        wait_for=[last])
        stages.summary(cfg, run)
        record_after_swap(root, cfg, ran=list(run))  # never fails a run whose set is live
    return run


@flow(name="stage", log_prints=True)
def stage_flow(name: str, params: Config, root: str = ".") -> dict[str, Any]:
    """One stage as a flow run (what `embedline stage` does when a Prefect API is configured)."""
    return stages.single_stage(name, params, str(Path(root).resolve()))


if __name__ == "__main__":
    ingest()
