"""The optional store abilities (base.py) are found by type, not by name lookups: Edge has every
one, the qdrant-client store none, so each takes its own path through the same code."""

from __future__ import annotations

from pathlib import Path

from embedline.tasks.vectorsets.base import (
    ColumnPacking,
    FieldRecord,
    FieldScan,
    PageRelease,
    PreparedWrites,
    VectorStore,
)
from embedline.tasks.vectorsets.edge import EdgeStore
from embedline.tasks.vectorsets.qdrant import QdrantClientStore

ABILITIES = (PreparedWrites, ColumnPacking, PageRelease, FieldScan, FieldRecord)


def test_edge_has_every_ability_and_the_client_store_none(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path / "edge")
    assert isinstance(edge, VectorStore) and all(isinstance(edge, a) for a in ABILITIES)
    assert all(hasattr(QdrantClientStore, m) for m in ("upsert", "scan", "search"))
    for ability in ABILITIES:
        members = [m for m in vars(ability) if not m.startswith("_")]
        assert members and not all(hasattr(QdrantClientStore, m) for m in members), ability
