"""Thin Prefect tasks around the pure stage functions in `tasks/`.

The wrappers add only retries, timeouts, logging and UI artifacts. Inputs are a validated `Config`
and the project root as a string: never models, clients or corpora (they break Prefect's cache keys
and would push whole datasets through results). Caching is deliberately *not* Prefect's: artifacts
are cached by DVC and embeddings by the content-addressed embedding cache, which survive process and
server restarts and are keyed by content rather than by task inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.pipeline import run_stage
from embedline.tasks.records import read_json, read_rejections
from embedline.tasks.retrying import is_transient
from embedline.tasks.summary import one_line, promote_line, summary_markdown


def _art(root: str) -> Artifacts:
    return Artifacts(Path(root))


def _resolved(cfg: Config, root: str) -> Config:
    """``embed.backend=auto`` -> the calibrated backend (calibrated once, on the chunks)."""
    from embedline.tasks.embed.auto import resolve_auto

    return resolve_auto(cfg, _art(root))


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only errors that a second attempt can fix (network, timeouts, rate limits): the one
    classification shared with the embed providers and the stores (:mod:`embedline.tasks.retrying`)."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 classifies whatever the task raised, by type (retry predicate)
        return is_transient(exc)
    return False


@task(name="preprocess", cache_policy=NONE, timeout_seconds=3600)
def preprocess(cfg: Config, root: str) -> dict[str, Any]:
    stats = run_stage("preprocess", cfg, _art(root))
    _report_preprocess(root, stats)
    return stats


@task(name="load-files", cache_policy=NONE)
def load_files(params: Any, batch: list[tuple[str, str]]) -> list[list[Any]]:
    """One batch of files through the loaders (a unit of the preprocess fan-out, any process)."""
    from embedline.tasks.preprocess import load_files as load

    return load(params, batch)  # type: ignore[return-value]


@task(name="preprocess-report", cache_policy=NONE)
def preprocess_report(root: str, stats: dict[str, Any]) -> None:
    _report_preprocess(root, stats)


def _report_preprocess(root: str, stats: dict[str, Any]) -> None:
    get_run_logger().info(one_line("preprocess", stats))
    rejected = read_rejections(_art(root).rejected)
    if rejected:
        create_table_artifact(
            key="rejected-files",
            table=[{"path": r.path, "reason": r.reason, "detail": r.detail} for r in rejected[:500]],
            description=f"{len(rejected)} input files or records were rejected (first 500 shown)",
        )


@task(name="chunk", cache_policy=NONE, timeout_seconds=3600)
def chunk(cfg: Config, root: str) -> dict[str, Any]:
    stats = run_stage("chunk", cfg, _art(root))
    get_run_logger().info(one_line("chunk", stats))
    return stats


@task(name="plan-chunk-shards", cache_policy=NONE)
def plan_chunk_shards(cfg: Config, root: str) -> Any:
    from embedline.tasks.chunk import plan_chunk

    return plan_chunk(cfg, _art(root))


@task(name="chunk-shard", cache_policy=NONE)
def chunk_shard(cfg: Config, root: str, shard: int, full: bool) -> dict[str, Any]:
    """One document shard of the chunk fan-out (writes that chunk shard; same bytes anywhere)."""
    from embedline.tasks.chunk import chunk_one

    return chunk_one(cfg, _art(root), shard, full)


@task(name="chunk-finalize", cache_policy=NONE)
def chunk_finalize(cfg: Config, root: str, plan: Any, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Chunk ledger + stale shards + stats of a chunk fan-out."""
    from embedline.tasks.chunk import finalize_chunk
    from embedline.tasks.records import write_json

    art = _art(root)
    stats = finalize_chunk(cfg, art, plan, results)
    write_json(art.metric("chunk"), stats)
    get_run_logger().info(one_line("chunk", stats))
    return stats


@task(name="plan-embed-shards", cache_policy=NONE)
def plan_embed_shards(cfg: Config, root: str) -> list[Any]:
    from embedline.tasks.embed import plan_shards

    return list(plan_shards(_resolved(cfg, root), _art(root)))


@task(
    name="embed-shard",
    cache_policy=NONE,
    retries=3,
    retry_delay_seconds=[5, 30, 120],
    retry_condition_fn=_transient,
    # no timeout_seconds: shards run in worker threads (or Dask workers) where Prefect cannot
    # interrupt them and warns on every shard; API requests time out via embed.timeout_s instead
)
def embed_shard(cfg: Config, root: str, shard: Any) -> dict[str, Any]:
    """One shard of the embed fan-out: fills the embedding cache for a row range."""
    from embedline.tasks import progress
    from embedline.tasks.embed import embed_shard as _embed_shard
    from embedline.tasks.embed.rows import ChunkRows

    art = _art(root)
    bar = progress.shared("embed", total=ChunkRows(art.chunks).num_rows, unit="chunk")  # all shards
    return _embed_shard(_resolved(cfg, root), art, shard, progress.row_reporter(bar, shard.row_start))


@task(name="plan-vector-shards", cache_policy=NONE)
def plan_vector_shards(root: str) -> list[int]:
    from embedline.tasks.embed.stage import plan_vector_shards as _plan

    return _plan(_art(root))


@task(name="vector-shard", cache_policy=NONE)
def vector_shard(cfg: Config, root: str, index: int) -> dict[str, Any]:
    """One vector shard of the embed fan-out, from the cache (same bytes on any worker)."""
    from embedline.tasks.embed.stage import write_vector_shard_for

    return write_vector_shard_for(_resolved(cfg, root), _art(root), index)


@task(name="embed", cache_policy=NONE, timeout_seconds=3600)
def embed(cfg: Config, root: str, shard_stats: list[dict[str, Any]],
          vector_results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write the vector shards (unless a fan-out did) + manifest from the cache filled by the shards."""
    from embedline.tasks import progress
    from embedline.tasks.embed import finalize_embed

    progress.close("embed")  # the shards' shared tracker
    art = _art(root)
    stats = finalize_embed(_resolved(cfg, root), art, shard_stats, vector_results=vector_results)
    stats["shards"] = len(shard_stats)
    from embedline.tasks.records import write_json

    write_json(art.metric("embed"), stats)
    get_run_logger().info(one_line("embed", stats))
    return stats


def embed_progress(total: int) -> Any:
    """A progress artifact and a callback that updates it (at most every 2 %)."""
    artifact_id = cast(UUID, create_progress_artifact(  # sync call: a UUID, not a coroutine
        progress=0.0, key="embed-progress", description=f"embedding {total} shards"))
    last = [0.0]

    def update(done: int, of: int) -> None:
        pct = 100.0 * done / max(of, 1)
        if pct - last[0] >= 2 or done >= of:
            last[0] = pct
            update_progress_artifact(artifact_id, progress=pct)

    return update


@task(name="dedupe", cache_policy=NONE, timeout_seconds=3600)
def dedupe(cfg: Config, root: str) -> dict[str, Any]:
    art = _art(root)
    stats = run_stage("dedupe", cfg, art)
    get_run_logger().info(one_line("dedupe", stats))
    report = read_json(art.dedupe_report) if art.dedupe_report.exists() else {}
    rows = [
        {
            "representative": str(g.get("representative", "")),
            "size": int(g.get("size", 0)),
            "kind": str(g.get("kind", "")),
            "example": str(g.get("example", ""))[:160],
        }
        for g in report.get("examples", [])
    ]
    if rows:
        create_table_artifact(key="dedupe-report", table=rows,
                              description="duplicate groups (representative, size, kind)")
    return stats


@task(
    name="upsert",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=_transient,
    timeout_seconds=6 * 3600,
)
def upsert(cfg: Config, root: str, allow_mass_delete: bool = False) -> dict[str, Any]:
    stats = run_stage("upsert", cfg, _art(root), allow_mass_delete=allow_mass_delete)
    get_run_logger().info(one_line("upsert", stats))
    return stats


@task(name="promote", cache_policy=NONE, timeout_seconds=3600)
def promote(cfg: Config, root: str, promote_now: bool, reason: str | None = None,
            allow_mass_delete: bool = False) -> dict[str, Any]:
    """Serve the built set (gate + alias swap) when ``promote_now``; else report the shadow set."""
    stats = run_stage("promote", cfg, _art(root), promote_now=promote_now, reason=reason,
                      allow_mass_delete=allow_mass_delete)
    get_run_logger().info(promote_line(stats))
    return stats


@task(name="plan", cache_policy=NONE)
def plan(cfg: Config, root: str) -> dict[str, Any]:
    """What an ingest would change now (a scratch workspace; nothing is written)."""
    from embedline.tasks.plan import plan_ingest

    result = plan_ingest(_resolved(cfg, root), _art(root))
    create_table_artifact(key="ingest-plan", table=[{"item": k, "value": str(v)} for k, v in result.items()],
                          description="dry run: what an ingest would do")
    get_run_logger().info("plan: " + ", ".join(f"{k}={v}" for k, v in result.items()))
    return result


@task(name="evaluate", cache_policy=NONE, timeout_seconds=3600)
def evaluate(cfg: Config, root: str) -> dict[str, Any]:
    stats = run_stage("evaluate", cfg, _art(root))
    get_run_logger().info(one_line("evaluate", stats))
    return stats


@task(name="summary", cache_policy=NONE)
def summary(cfg: Config, stages: dict[str, dict[str, Any]]) -> str:
    md = summary_markdown(cfg, stages)
    create_markdown_artifact(key="ingest-summary", markdown=md, description="embedline ingest run")
    return md


def track(futures: Any, progress: Any) -> list[dict[str, Any]]:
    """Wait for mapped futures, updating a progress callback as each completes (DAG order kept)."""
    from prefect.futures import as_completed

    for done, _ in enumerate(as_completed(list(futures)), start=1):
        progress(done, len(futures))
    return [f.result() for f in futures]


@task(name="stage", cache_policy=NONE, task_run_name="{name}")
def single_stage(name: str, cfg: Config, root: str) -> dict[str, Any]:
    """Any one stage, run whole (the DVC path when PREFECT_API_URL is set)."""
    stats = run_stage(name, cfg, _art(root))
    get_run_logger().info(one_line(name, stats))
    return stats
