"""Qdrant Edge stores payloads packed (edge_schema: a few flat keys + one JSON string): every read
gives the payload back as written, old unpacked points read the same, filters stay on flat keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedline.tasks.config import QdrantParams
from embedline.tasks.vectorsets.edge import EdgeStore
from embedline.tasks.vectorsets.edge_schema import (
    FLAT_FIELDS,
    PACKED_KEY,
    pack_payload,
    unpack_payload,
)
from embedline.tasks.vectorsets.stores import (
    PointRecord,
    StoreError,
    VectorSetSpec,
    close_stores,
    open_store,
)

pytestmark = pytest.mark.integration

DIMS = 8


def _payload(i: int) -> dict[str, object]:
    return {"text": f"Straße {i} ‐ ünïcode", "source": f"s{i}.md", "doc_id": f"d{i % 2}", "chunk_id": f"c{i}",
            "chunk_index": i, "heading_path": ["A", f"B{i}"], "char_start": 0, "char_end": 9,
            "sources": [{"chunk_id": f"c{i}", "source": f"s{i}.md", "match": "exact", "similarity": 1.0}],
            "duplicates": [], "is_duplicate": i == 3, "metadata": {"document": {"encoding": "utf-8"}},
            "title": None, "payload_hash": f"h{i}"}


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeStore]:
    store = open_store(QdrantParams.model_validate({"backend": "edge", "path": str(tmp_path / "q")}), tmp_path)
    assert isinstance(store, EdgeStore)
    store.ensure(VectorSetSpec(name="c", dims=DIMS))
    yield store
    close_stores()


def _points(n: int) -> list[PointRecord]:
    vecs = np.eye(n, DIMS, dtype=np.float32) + 0.01
    return [PointRecord(id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"p{i}")), vector=vecs[i], payload=_payload(i))
            for i in range(n)]


def test_every_read_returns_the_payload_as_written(edge: EdgeStore) -> None:
    pts = _points(5)
    edge.upsert("c", pts)
    want = {p.id: p.payload for p in pts}
    assert {r.id: r.payload for r in edge.scan("c")} == want
    assert {r.id: r.payload for r in edge.retrieve("c", list(want))} == want
    hits = edge.search("c", pts[2].vector, k=5)  # type: ignore[arg-type]
    assert {h.id: h.payload for h in hits} == want
    # a list of keys: exactly those, flat or packed
    lean = {r.id: r.payload for r in edge.scan("c", with_payload=["payload_hash"])}
    assert lean == {p.id: {"payload_hash": p.payload["payload_hash"]} for p in pts}  # type: ignore[index]
    some = edge.search("c", pts[2].vector, k=1, with_payload=["source", "sources", "metadata"])  # type: ignore[arg-type]
    assert some[0].payload == {k: want[pts[2].id][k] for k in ("source", "sources", "metadata")}  # type: ignore[index]


def test_scan_field_is_the_scan_of_one_key(edge: EdgeStore) -> None:
    """The sync's lean scan (id, payload hash) gives what the record scan gives, flat or packed key."""
    pts = _points(5)
    edge.upsert("c", pts)
    for key in ("payload_hash", "sources"):
        want = sorted((r.id, (r.payload or {}).get(key)) for r in edge.scan("c", with_payload=[key]))
        assert sorted(edge.scan_field("c", key, batch=2)) == want
        assert len(want) == 5 and all(v is not None for _, v in want)


def test_the_shard_holds_flat_keys_and_one_packed_string(edge: EdgeStore) -> None:
    pts = _points(2)
    edge.upsert("c", pts)
    raw = edge._shard("c").retrieve([pts[0].id], with_payload=True, with_vector=False)[0].payload
    assert set(raw) == (FLAT_FIELDS & set(pts[0].payload or {})) | {PACKED_KEY}
    assert isinstance(raw[PACKED_KEY], str)
    assert unpack_payload(raw) == pts[0].payload


def test_points_written_unpacked_read_back_unchanged(edge: EdgeStore) -> None:
    import qdrant_edge as qe

    p = _points(1)[0]
    edge._shard("c").update(qe.UpdateOperation.upsert_points([qe.Point(p.id, p.vector.tolist(), dict(p.payload))]))  # type: ignore[union-attr]
    assert edge.retrieve("c", [p.id])[0].payload == p.payload
    assert next(iter(edge.scan("c", with_payload=["sources"]))).payload == {"sources": p.payload["sources"]}  # type: ignore[index]


def test_filters_match_flat_keys_and_refuse_packed_ones(edge: EdgeStore) -> None:
    pts = _points(4)
    edge.upsert("c", pts)
    got = edge.search("c", pts[0].vector, k=4, filter={"doc_id": "d1", "chunk_id": "c3"})  # type: ignore[arg-type]
    assert [h.id for h in got] == [pts[3].id]
    with pytest.raises(StoreError, match="chunk_index"):
        edge.search("c", pts[0].vector, k=4, filter={"chunk_index": 1})  # type: ignore[arg-type]


def test_boolean_filters_match(edge: EdgeStore) -> None:
    """``is_duplicate`` filters matched nothing (qdrant-edge-py makes a bool match an integer one);
    the flag reads back as a bool."""
    pts = _points(4)  # point 3 is the duplicate
    edge.upsert("c", pts)
    dup = edge.search("c", pts[0].vector, k=4, filter={"is_duplicate": True})  # type: ignore[arg-type]
    assert [h.id for h in dup] == [pts[3].id] and dup[0].payload["is_duplicate"] is True
    rest = edge.search("c", pts[0].vector, k=4, filter={"is_duplicate": False})  # type: ignore[arg-type]
    assert {h.id for h in rest} == {p.id for p in pts[:3]}
    assert all(h.payload["is_duplicate"] is False for h in rest)


def test_pack_falls_back_to_json_for_what_orjson_refuses() -> None:
    payload = {"doc_id": "d", "big": 2**70, "nested": {"1": [1.5, None]}}
    assert unpack_payload(pack_payload(payload)) == payload
    assert pack_payload({}) == {} and unpack_payload(None) == {}


def test_the_write_path_stores_what_the_list_path_stored(edge: EdgeStore) -> None:
    """Requests built from float32 rows as ``array('f')`` (the write path), from other dtypes,
    non-contiguous views and lists: every collection holds the very points (ids, vectors to the
    last bit, payloads) that writing the old way (one ``tolist()`` per batch) gave."""
    import array

    from embedline.tasks.vectorsets.edge import _dense_vectors

    rng = np.random.default_rng(7)
    base = rng.standard_normal((6, 2 * DIMS)).astype(np.float32)
    rows = [base[i, :DIMS].copy() for i in range(6)]
    wide = np.zeros((6, 2 * DIMS), dtype=np.float32)
    wide[:, ::2] = np.asarray(rows)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"w{i}")) for i in range(6)]
    variants = {
        "old": [np.asarray(rows, dtype=np.float32).tolist()[i] for i in range(6)],  # main's path
        "f32": rows,
        "f64": [r.astype(np.float64) for r in rows],
        "view": [base[i, :DIMS] for i in range(6)],  # contiguous slices of a wider array
        "strided": [wide[i, ::2] for i in range(6)],  # not contiguous: the list fallback
    }
    kinds = {k: [type(v).__name__ for v in _dense_vectors(
        [PointRecord(id=i, vector=v) for i, v in zip(ids, vs, strict=True)])] for k, vs in variants.items()}
    assert kinds["f32"] == kinds["view"] == [array.array.__name__] * 6 and kinds["old"] == ["list"] * 6
    assert kinds["f64"] == kinds["strided"] == ["list"] * 6
    for name, vecs in variants.items():
        edge.ensure(VectorSetSpec(name=name, dims=DIMS, distance="Dot"))  # Dot: stored as given
        edge.upsert(name, [PointRecord(id=i, vector=v, payload=_payload(k))  # type: ignore[arg-type]
                           for k, (i, v) in enumerate(zip(ids, vecs, strict=True))])
    got = {name: {r.id: (r.vector.tobytes(), r.payload)  # type: ignore[union-attr]
                  for r in edge.retrieve(name, ids, with_vectors=True)} for name in variants}
    assert len(got["old"]) == 6
    assert all(got[name] == got["old"] for name in variants)
    assert {i: v for i, (v, _) in got["f32"].items()} == {i: r.tobytes() for i, r in zip(ids, rows, strict=True)}


def test_a_point_without_a_vector_is_a_clear_error(edge: EdgeStore) -> None:
    with pytest.raises(StoreError, match="has no vector"):
        edge.upsert("c", [PointRecord(id=str(uuid.uuid4()), vector=None)])  # type: ignore[arg-type]
