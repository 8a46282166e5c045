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
