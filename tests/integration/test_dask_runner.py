"""The embed fan-out on a 2-worker Dask LocalCluster gives the same vectors and points as threads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.chunkdata import folder_bytes
from tests.conftest import FAKE, make_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def point_ids(root: Path) -> list[str]:
    from embedline.tasks.config import load_config
    from embedline.tasks.records import read_json
    from embedline.tasks.vectorsets.stores import open_store

    cfg = load_config(root / "params.yaml")
    receipt = read_json(root / "data" / "receipts" / "upsert.json")
    store = open_store(cfg.qdrant, root)
    try:
        return sorted(str(p.id) for p in store.scan(receipt["collection"]))
    finally:
        close = getattr(store, "close", None)
        if close:
            close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from prefect.testing.utilities import prefect_test_harness

    from embedline.flows.ingest import ingest

    # several shards, so the fan-out really spreads over both workers
    params = {**FAKE, "embed.shard_rows": 2, "run.dask_workers": 2, "run.shards": 4}
    thread = make_project(tmp_path_factory.mktemp("thread") / "proj", {**params, "run.runner": "thread"})
    dask = make_project(tmp_path_factory.mktemp("dask") / "proj", {**params, "run.runner": "dask"})
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addHandler(handler)
    try:
        with prefect_test_harness(server_startup_timeout=120):
            out = {
                "thread": ingest(root=str(thread), evaluate=False),
                "dask": ingest(root=str(dask), evaluate=False),
            }
    finally:
        prefect_logger.removeHandler(handler)
    return {"roots": {"thread": thread, "dask": dask}, "logs": records, **out}


def test_dask_runner_gives_identical_vectors_and_points(runs: dict[str, Any]) -> None:
    roots = runs["roots"]
    vec = {k: folder_bytes(r / "data" / "embeddings" / "vectors") for k, r in roots.items()}
    assert sum(len(b) for b in vec["thread"].values()) > 128
    assert vec["dask"] == vec["thread"]
    ids = {k: point_ids(r) for k, r in roots.items()}
    assert ids["thread"] and ids["dask"] == ids["thread"]
    assert runs["dask"]["embed"]["shards"] == runs["thread"]["embed"]["shards"] > 1
    assert runs["dask"]["upsert"]["points_total"] == runs["thread"]["upsert"]["points_total"]
    # the dask run really used a (2-worker) LocalCluster through prefect-dask
    assert any("LocalCluster" in m for m in runs["logs"]), runs["logs"][:20]


def test_dask_chunk_fanout_gives_identical_shards(runs: dict[str, Any]) -> None:
    """Chunking runs shard-parallel on the cluster and writes the same bytes as the thread runner."""
    from embedline.tasks.shards import shard_files

    roots = runs["roots"]
    for folder in ("documents", "chunks"):
        files = {k: {f.name: f.read_bytes() for f in shard_files(r / "data" / "interim" / folder)}
                 for k, r in roots.items()}
        assert len(files["thread"]) > 1 and files["dask"] == files["thread"], folder
    assert (roots["dask"] / "data/interim/chunk_ledger.parquet").read_bytes() == (
        roots["thread"] / "data/interim/chunk_ledger.parquet").read_bytes()
    dask, thread = runs["dask"]["chunk"], runs["thread"]["chunk"]
    assert dask["chunks"] == thread["chunks"] and dask["documents_chunked"] == thread["documents_chunked"]
    assert thread["worker_processes"] == 0 and dask["worker_processes"] >= 1  # shards ran on the workers

