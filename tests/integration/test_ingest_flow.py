"""End to end: the `ingest` Prefect flow on the bundled sample corpus, real model, embedded Qdrant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.records import count_rows, read_json

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]


def smoke_query() -> tuple[str, str]:
    """The sample corpus' smoke query and its expected top source (data/eval/smoke.json)."""
    data = json.loads((PROJECT / "data" / "eval" / "smoke.json").read_text())
    return data["query"], data["expected_source"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from prefect.testing.utilities import prefect_test_harness

    from embedline.flows.ingest import ingest
    from tests.conftest import make_project

    root = tmp_path_factory.mktemp("e2e") / "proj"
    make_project(root, {}, docs={})
    import shutil

    shutil.rmtree(root / "data" / "raw")
    shutil.copytree(PROJECT / "data" / "raw", root / "data" / "raw")
    shutil.copytree(PROJECT / "data" / "eval", root / "data" / "eval")
    with prefect_test_harness(server_startup_timeout=120):
        first = ingest(root=str(root), evaluate=False)
        second = ingest(root=str(root), evaluate=False)
    return {"root": root, "first": first, "second": second}


def test_points_equal_unique_chunks(ingested: dict) -> None:
    from embedline.tasks.vectorsets.stores import open_store

    root: Path = ingested["root"]
    cfg = load_config(root / "params.yaml")
    art = Artifacts(root)
    up = ingested["first"]["upsert"]
    ded = ingested["first"]["dedupe"]
    unique = count_rows(art.deduped)
    assert unique == count_rows(art.chunks) - ded["exact_removed"] - ded["near_removed"]
    assert ded["exact_removed"] > 0  # the sample corpus plants exact duplicates
    store = open_store(cfg.qdrant, root)
    receipt = read_json(art.receipt)
    assert store.count(receipt["collection"]) == unique == up["points_total"]


def test_payloads_carry_provenance(ingested: dict) -> None:
    from embedline.tasks.vectorsets.stores import open_store

    root: Path = ingested["root"]
    cfg = load_config(root / "params.yaml")
    art = Artifacts(root)
    manifest = read_json(art.manifest)
    receipt = read_json(art.receipt)
    assert receipt["fingerprint"] == manifest["fingerprint"]
    assert manifest["fingerprint"] in receipt["collection"]
    store = open_store(cfg.qdrant, root)
    points = list(store.scan(receipt["collection"]))
    assert points
    for p in points:
        for key in ("text", "source", "chunk_index", "fingerprint", "sources"):
            assert key in p.payload, key
        assert p.payload["fingerprint"] == manifest["fingerprint"]
        assert p.payload["text"].strip()


def test_known_query_top_hit(ingested: dict) -> None:
    from embedline.tasks.vectorsets.search import search

    root: Path = ingested["root"]
    query, expected = smoke_query()
    hits = search(load_config(root / "params.yaml"), Artifacts(root), query, 3)
    assert hits and hits[0].source == expected, [h.source for h in hits]


def test_second_run_changes_nothing(ingested: dict) -> None:
    first, second = ingested["first"], ingested["second"]
    assert second["upsert"]["added"] == second["upsert"]["updated"] == second["upsert"]["deleted"] == 0
    assert second["upsert"]["unchanged"] == first["upsert"]["points_total"]
    assert second["embed"]["cache_misses"] == 0
