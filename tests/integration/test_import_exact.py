"""`import` into an existing collection makes it equal to the file (issue 14 row 12): points the
file does not hold are deleted, changed ones overwritten, and the count is checked against the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import load_config
from embedline.tasks.pipeline import INGEST_STAGES, run_stage
from embedline.tasks.vectorsets.stores import PointRecord, close_stores, open_store
from embedline.tasks.vectorsets.transfer import export_points, import_points
from tests.conftest import FAKE, TINY_DOCS, make_project

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _close_stores() -> Any:
    yield
    close_stores()


def state(store: Any, collection: str) -> dict[str, dict[str, Any]]:
    return {p.id: dict(p.payload or {}) for p in store.scan(collection, with_payload=True)}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_import_into_existing_collection_equals_the_file(tmp_path: Path, fmt: str) -> None:
    root = make_project(tmp_path / "p", FAKE, docs=TINY_DOCS)
    cfg, art = load_config(root / "params.yaml"), Artifacts(root)
    for name in INGEST_STAGES:
        run_stage(name, cfg, art)
    store = open_store(cfg.qdrant, root)
    out = tmp_path / f"points.{fmt}"
    n = export_points(cfg, art, out, fmt, with_vectors=True)  # type: ignore[arg-type]
    live = store.get_alias(cfg.qdrant.collection)
    exported = state(store, live)

    # drift after the export: an extra point, a changed point, a deleted point
    ids = sorted(exported)
    rec = store.retrieve(live, [ids[0]], with_vectors=True)[0]
    extra = "00000000-0000-5000-8000-0000000000aa"
    store.upsert(live, [PointRecord(extra, np.ones_like(rec.vector), {"payload_hash": "extra"}),
                        PointRecord(ids[0], rec.vector, {**(rec.payload or {}), "text": "changed"})])
    store.delete(live, [ids[1]])

    assert import_points(cfg, art, out) == n
    assert state(store, live) == exported
    assert store.count(live) == n
