"""The chunk fan-out's pure functions on a 2-worker Dask LocalCluster (no Prefect server): every
chunk shard, the chunk ledger and the stats are byte-identical to the in-process run, for a first
run and for an incremental one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.chunk import chunk_one, finalize_chunk, plan_chunk, run_chunk
from embedline.tasks.config import load_config
from embedline.tasks.preprocess import run_preprocess
from embedline.tasks.shards import shard_files
from tests.conftest import FAKE, TINY_DOCS, make_project, write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DOCS = {**TINY_DOCS, **{f"more/doc{i}.txt": f"Document {i} talks about topic {i * 7} at length. " * 20
                         for i in range(12)}}


def _files(art: Artifacts) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in shard_files(art.chunks)} | {
        "ledger": art.chunk_ledger.read_bytes()}


def _on_cluster(client: Any, root: Path) -> dict[str, Any]:
    cfg, art = load_config(root / "params.yaml"), Artifacts(root)
    plan = plan_chunk(cfg, art)
    futures = client.map(chunk_one, [cfg] * len(plan.shards), [art] * len(plan.shards), list(plan.shards),
                         [plan.full] * len(plan.shards), pure=False)
    return finalize_chunk(cfg, art, plan, client.gather(futures))


def test_dask_chunk_shards_equal_in_process(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    roots = {k: make_project(tmp_path / k, {**FAKE, "run.shards": 4}, docs=DOCS) for k in ("local", "dask")}
    for root in roots.values():
        run_preprocess(load_config(root / "params.yaml"), Artifacts(root))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        local = run_chunk(load_config(roots["local"] / "params.yaml"), Artifacts(roots["local"]))
        dask = _on_cluster(client, roots["dask"])
        assert dask["worker_processes"] >= 1 and local["worker_processes"] == 0
        assert _files(Artifacts(roots["dask"])) == _files(Artifacts(roots["local"]))
        assert len(shard_files(Artifacts(roots["local"]).chunks)) > 1
        keys = ("documents", "chunks", "tokens_total", "documents_chunked", "split_sentences")
        assert {k: dask[k] for k in keys} == {k: local[k] for k in keys}
        # an incremental run on the cluster: one edited document, same bytes again
        for root in roots.values():
            write_corpus(root / "data" / "raw", {"more/doc3.txt": "An edited document about new things. " * 15})
            run_preprocess(load_config(root / "params.yaml"), Artifacts(root))
        local = run_chunk(load_config(roots["local"] / "params.yaml"), Artifacts(roots["local"]))
        dask = _on_cluster(client, roots["dask"])
        assert dask["documents_chunked"] == local["documents_chunked"] == 1
        assert _files(Artifacts(roots["dask"])) == _files(Artifacts(roots["local"]))


def _points(root: Path) -> dict[str, str]:
    from embedline.tasks.vectorsets.stores import close_stores, open_store

    cfg = load_config(root / "params.yaml")
    store = open_store(cfg.qdrant, root)
    try:
        name = store.get_alias(cfg.qdrant.collection) or next(
            c for c in store.list_collections() if c.startswith(cfg.qdrant.collection))
        return {p.id: (p.payload or {})["payload_hash"] for p in store.scan(name, with_payload=["payload_hash"])}
    finally:
        close_stores()


def test_dask_embed_shards_equal_in_process(tmp_path: Path) -> None:
    """Embedding (row-range shards into the cache) and the vector shards (one task per chunk shard)
    on a 2-worker LocalCluster: byte-identical vector shards and manifest, and the same points."""
    from distributed import Client, LocalCluster

    from embedline.tasks.embed.stage import (
        embed_shard,
        finalize_embed,
        plan_shards,
        plan_vector_shards,
        run_embed,
        write_vector_shard_for,
    )
    from embedline.tasks.pipeline import run_stage

    params = {**FAKE, "run.shards": 4, "embed.shard_rows": 3}
    roots = {k: make_project(tmp_path / k, params, docs=DOCS) for k in ("local", "dask")}
    for root in roots.values():
        cfg, art = load_config(root / "params.yaml"), Artifacts(root)
        run_preprocess(cfg, art)
        run_chunk(cfg, art)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        run_embed(load_config(roots["local"] / "params.yaml"), Artifacts(roots["local"]))
        cfg, art = load_config(roots["dask"] / "params.yaml"), Artifacts(roots["dask"])
        shards = plan_shards(cfg, art)
        assert len(shards) > 2
        stats = client.gather(client.map(embed_shard, [cfg] * len(shards), [art] * len(shards), shards, pure=False))
        indexes = plan_vector_shards(art)
        assert len(indexes) > 1
        vec = client.gather(client.map(write_vector_shard_for, [cfg] * len(indexes), [art] * len(indexes), indexes,
                                       pure=False))
        assert all(r["written"] for r in vec)
        finalize_embed(cfg, art, stats, vector_results=vec)
    local, dask = Artifacts(roots["local"]), Artifacts(roots["dask"])
    files = {f.name: f.read_bytes() for f in shard_files(local.vectors)}
    assert len(files) == len(indexes) and files == {f.name: f.read_bytes() for f in shard_files(dask.vectors)}
    assert local.manifest.read_bytes() == dask.manifest.read_bytes()
    for root in roots.values():
        cfg, art = load_config(root / "params.yaml"), Artifacts(root)
        run_stage("dedupe", cfg, art)
        run_stage("upsert", cfg, art)
    assert _points(roots["local"]) == _points(roots["dask"]) and _points(roots["local"])
