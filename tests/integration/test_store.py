"""One store test suite, run against every backend: edge, local, and server when QDRANT_URL is set."""

from __future__ import annotations

import dataclasses
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedline.tasks.config import QdrantParams
from embedline.tasks.vectorsets.stores import (
    CollectionNotFoundError,
    PointRecord,
    StoreError,
    VectorSetMismatchError,
    VectorSetSpec,
    VectorStore,
    close_stores,
    open_store,
)

pytestmark = pytest.mark.integration

DIMS = 16
BACKENDS = [
    "edge",
    "local",
    pytest.param(
        "server",
        marks=[
            pytest.mark.server,
            pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="QDRANT_URL not set"),
        ],
    ),
]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    backend = request.param
    url = os.environ.get("QDRANT_URL") if backend == "server" else None
    params = QdrantParams.model_validate({"backend": backend, "path": str(tmp_path / "qdrant"), "url": url})
    s = open_store(params, tmp_path)
    yield s
    if backend == "server":  # a shared server: remove what this test created
        for alias, target in s.list_aliases().items():
            if target.startswith(_PREFIX):
                s.delete_alias(alias)
        for name in s.list_collections():
            if name.startswith(_PREFIX):
                s.drop_collection(name)
    close_stores()


_PREFIX = f"t{uuid.uuid4().hex[:6]}"


def _name(suffix: str) -> str:
    return f"{_PREFIX}-{suffix}"


def _spec(name: str, dims: int = DIMS, **meta: object) -> VectorSetSpec:
    return VectorSetSpec(name=name, dims=dims, metadata={"fingerprint": "fp1", "model": "m1", **meta})


def _points(n: int, seed: int = 0, start: int = 0) -> tuple[list[PointRecord], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIMS)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    pts = [
        PointRecord(
            id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"p{start + i}")),
            vector=vecs[i],
            payload={"doc_id": f"d{(start + i) % 3}", "source": f"s{start + i}.md", "text": f"t{start + i}", "n": start + i},
        )
        for i in range(n)
    ]
    return pts, vecs


def test_ensure_is_idempotent_and_describes(store: VectorStore) -> None:
    name = _name("a")
    assert store.describe(name) is None
    assert store.ensure(_spec(name)) is True
    assert store.ensure(_spec(name)) is False
    spec = store.describe(name)
    assert spec is not None and spec.dims == DIMS and spec.distance == "Cosine"
    assert spec.metadata["fingerprint"] == "fp1" and spec.metadata["model"] == "m1"
    assert name in store.list_collections()


def test_dims_or_model_mismatch_is_a_clear_error(store: VectorStore) -> None:
    name = _name("b")
    store.ensure(_spec(name))
    with pytest.raises(VectorSetMismatchError, match="dims"):
        store.ensure(_spec(name, dims=DIMS * 2))
    with pytest.raises(VectorSetMismatchError, match="model"):
        store.ensure(_spec(name, model="other"))


def test_upsert_count_retrieve_scan_delete(store: VectorStore) -> None:
    name = _name("c")
    store.ensure(_spec(name))
    pts, vecs = _points(50)
    store.upsert(name, pts[:30])
    store.upsert(name, pts[20:])  # overlapping ids: upsert, never duplicates
    assert store.count(name) == 50

    got = store.retrieve(name, [pts[3].id, pts[7].id, str(uuid.uuid4())], with_vectors=True)
    assert {g.id for g in got} == {pts[3].id, pts[7].id}
    by_id = {g.id: g for g in got}
    assert by_id[pts[3].id].vector is not None
    got3, got7 = by_id[pts[3].id], by_id[pts[7].id]
    assert got3.vector is not None and got7.payload is not None
    np.testing.assert_allclose(got3.vector, vecs[3], atol=1e-6)
    assert got7.payload["n"] == 7

    scanned = list(store.scan(name, with_payload=["n"], batch=7))
    assert sorted(p.id for p in scanned) == sorted(p.id for p in pts)
    assert all(p.payload is not None and set(p.payload) == {"n"} and p.vector is None for p in scanned)
    with_vec = list(store.scan(name, with_vectors=True, batch=16))
    assert all(p.vector is not None and p.vector.shape == (DIMS,) for p in with_vec)

    store.delete(name, [p.id for p in pts[:10]])
    assert store.count(name) == 40
    assert store.retrieve(name, [pts[0].id]) == []


def test_search_and_payload_filter(store: VectorStore) -> None:
    name = _name("d")
    store.ensure(_spec(name))
    pts, vecs = _points(40)
    store.upsert(name, pts)
    hits = store.search(name, vecs[5], k=3)
    assert hits[0].id == pts[5].id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].text == "t5" and hits[0].source == "s5.md"
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    filtered = store.search(name, vecs[5], k=5, filter={"doc_id": "d1"})
    assert filtered and all(h.payload["doc_id"] == "d1" for h in filtered)
    assert pts[5].id not in {h.id for h in filtered}  # doc d2
    anyof = store.search(name, vecs[5], k=50, filter={"source": ["s1.md", "s2.md"]})
    assert {h.source for h in anyof} == {"s1.md", "s2.md"}
    # evaluation asks only for the keys that name documents: the rest of the payload stays in the store
    lean = store.search(name, vecs[5], k=3, with_payload=["source", "sources"])
    assert [(h.id, h.score) for h in lean] == [(h.id, h.score) for h in hits]
    assert all(set(h.payload) == {"source"} for h in lean)


def test_alias_swap_and_drop(store: VectorStore) -> None:
    alias, v1, v2 = _name("live"), _name("v1"), _name("v2")
    store.ensure(_spec(v1))
    store.ensure(_spec(v2, fingerprint="fp2"))
    p1, vecs1 = _points(5, seed=1)
    p2, _ = _points(7, seed=2, start=100)
    store.upsert(v1, p1)
    store.upsert(v2, p2)
    assert store.get_alias(alias) is None
    with pytest.raises(CollectionNotFoundError):
        store.count(alias)
    store.swap_alias(alias, v1)
    assert store.get_alias(alias) == v1
    assert store.count(alias) == 5
    assert store.search(alias, vecs1[0], k=1)[0].id == p1[0].id
    spec = store.describe(alias)
    assert spec is not None and spec.name == v1
    store.swap_alias(alias, v2)
    assert store.get_alias(alias) == v2 and store.count(alias) == 7
    assert store.list_aliases()[alias] == v2
    assert alias not in store.list_collections()
    with pytest.raises(StoreError):
        store.drop_collection(v2)  # live
    store.drop_collection(v1)
    assert v1 not in store.list_collections() and store.describe(v1) is None
    with pytest.raises(CollectionNotFoundError):
        store.swap_alias(alias, _name("missing"))


def test_edge_indexes_the_configured_fields_and_adds_new_ones_to_an_existing_collection(tmp_path: Path) -> None:
    # each keyword index lives in RAM per point while the segment is appendable (docs/scaling.md):
    # only the fields listed are indexed, and listing one more indexes the points already there
    store = open_store(QdrantParams.model_validate({"backend": "edge", "path": str(tmp_path / "q")}), tmp_path)
    name = _name("idx")
    assert store.ensure(_spec(name))  # the default: doc_id only
    pts, vecs = _points(6)
    store.upsert(name, pts)
    shard = store._shard(name)  # type: ignore[attr-defined]
    assert set(shard.info().payload_schema) == {"doc_id"}
    spec = dataclasses.replace(_spec(name), payload_indexes=("doc_id", "source"))
    assert not store.ensure(spec)
    assert set(shard.info().payload_schema) == {"doc_id", "source"}
    assert store.describe(name).payload_indexes == ("doc_id", "source")  # type: ignore[union-attr]
    hits = store.search(name, vecs[4], k=3, filter={"source": "s4.md"})
    assert [h.payload["source"] for h in hits] == ["s4.md"]  # type: ignore[index]
    close_stores()


def test_a_client_store_records_fields_added_to_payload_indexes(tmp_path: Path) -> None:
    # local mode builds no payload index (only a server does), but the collection records the
    # fields, so a later run does not ask for them again
    store = open_store(QdrantParams.model_validate({"backend": "local", "path": str(tmp_path / "q")}), tmp_path)
    name = _name("idx")
    assert store.ensure(_spec(name))
    assert not store.ensure(dataclasses.replace(_spec(name), payload_indexes=("doc_id", "chunk_id")))
    spec = store.describe(name)
    assert spec is not None and spec.payload_indexes == ("doc_id", "chunk_id")
    assert spec.metadata.get("fingerprint") == "fp1"  # the rest of the record is kept
    close_stores()


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_reopen_keeps_points_and_aliases(backend: str, tmp_path: Path) -> None:
    params = QdrantParams.model_validate({"backend": backend, "path": str(tmp_path / "q")})
    s = open_store(params, tmp_path)
    s.ensure(_spec("col-1"))
    pts, vecs = _points(20)
    s.upsert("col-1", pts)
    s.swap_alias("live", "col-1")
    close_stores()
    s2 = open_store(params, tmp_path)
    assert s2.count("live") == 20
    assert s2.search("live", vecs[2], k=1)[0].id == pts[2].id
    close_stores()


def test_delete_alias(store: VectorStore) -> None:
    name, alias = _name("e"), _name("ealias")
    store.ensure(_spec(name))
    store.swap_alias(alias, name)
    store.delete_alias(alias)
    store.delete_alias(alias)  # idempotent
    assert store.get_alias(alias) is None and name in store.list_collections()
    store.drop_collection(name)


def test_edge_collection_locked_by_another_process_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from embedline.tasks.vectorsets import edge

    params = QdrantParams.model_validate({"backend": "edge", "path": str(tmp_path / "q")})
    s = open_store(params, tmp_path)
    s.ensure(_spec("held"))
    close_stores()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from embedline.tasks.config import QdrantParams; from embedline.tasks.vectorsets.stores import open_store; "
         f"s = open_store(QdrantParams.model_validate({{'path': {str(tmp_path / 'q')!r}}})); s.count('held'); "
         "print('ready', flush=True); time.sleep(60)"],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        monkeypatch.setattr(edge, "LOCK_WAIT_S", 0.5)
        with pytest.raises(StoreError, match="another process"):
            open_store(params, tmp_path).count("held")
    finally:
        holder.kill()
        holder.wait()
    assert open_store(params, tmp_path).count("held") == 0  # released with the process


# ---- hybrid: dense + BM25 sparse in one collection, fused server-side by RRF ----------------------
_TOPICS = [
    "supersonic boundary layer transition on a flat plate",
    "heat transfer in laminar boundary layers",
    "flutter of swept wings at transonic speed",
    "buckling of thin cylindrical shells under pressure",
    "shock wave interaction with a turbulent wake",
    "yeast bread dough rises in a warm kitchen",
]


def _sparse_points(seed: int = 3) -> tuple[list[PointRecord], np.ndarray]:
    from embedline.tasks.vectorsets.sparse import encoder

    enc = encoder({"language": "en"})
    pts, vecs = _points(len(_TOPICS) * 4, seed=seed)
    out = []
    for i, p in enumerate(pts):
        text = f"{_TOPICS[i % len(_TOPICS)]} (note {i})" + (" wing flutter" if i == 2 else "")
        payload = {**(p.payload or {}), "text": text}
        out.append(PointRecord(p.id, p.vector, payload, enc.document(payload["text"])))
    return out, vecs


def test_hybrid_search_fuses_dense_and_sparse(store: VectorStore) -> None:
    from embedline.tasks.vectorsets.base import RRF_K
    from embedline.tasks.vectorsets.sparse import encoder
    from embedline.tasks.vectorsets.stores import SparseVector

    name = _name("h")
    assert store.ensure(VectorSetSpec(name=name, dims=DIMS, sparse=True, metadata={"fingerprint": "fp1"}))
    spec = store.describe(name)
    assert spec is not None and spec.sparse is True
    pts, vecs = _sparse_points()
    store.upsert(name, pts)
    assert store.count(name) == len(pts)

    # sparse vectors are stored and read back (retrieve and scan), next to the dense one
    got = store.retrieve(name, [pts[1].id], with_vectors=True)[0]
    assert got.sparse is not None and got.sparse.as_dict() == pytest.approx(pts[1].sparse.as_dict())  # type: ignore[union-attr]
    np.testing.assert_allclose(got.vector, vecs[1], atol=1e-6)  # type: ignore[arg-type]
    assert all(p.sparse is not None for p in store.scan(name, with_vectors=True, batch=5))

    query = encoder({"language": "en"}).query("flutter of wings")  # topic 2: points 2, 8, 14, 20
    hits = store.search_hybrid(name, vecs[2], query, k=5)
    assert len(hits) == 5 and hits[0].id == pts[2].id  # first dense, first sparse (most flutter)
    # RRF scores: 1 / (RRF_K + rank from 0) from each branch
    assert hits[0].score == pytest.approx(2 / RRF_K, rel=1e-4)
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    flutter = {p.id for i, p in enumerate(pts) if i % len(_TOPICS) == 2}
    # every flutter point ranks in the sparse top 4: at most 3 dense-only hits (dense ranks 1-3) beat
    # the last of them
    assert flutter <= {h.id for h in store.search_hybrid(name, vecs[2], query, k=len(flutter) + 4)}
    # far from the flutter vector, the sparse branch still brings flutter points the dense misses
    far = -vecs[2]
    dense_only = {h.id for h in store.search(name, far, k=6)}
    assert (flutter & {h.id for h in store.search_hybrid(name, far, query, k=6)}) - dense_only

    filtered = store.search_hybrid(name, vecs[2], query, k=10, filter={"doc_id": "d1"})
    assert filtered and all(h.payload["doc_id"] == "d1" for h in filtered)
    # a query of stop words only has an empty sparse vector: dense results alone
    empty = store.search_hybrid(name, vecs[4], SparseVector(), k=3)
    assert [h.id for h in empty] == [h.id for h in store.search(name, vecs[4], k=3)]
    # through an alias, like every other read
    store.swap_alias(_name("hlive"), name)
    assert store.search_hybrid(_name("hlive"), vecs[2], query, k=1)[0].id == pts[2].id
    store.delete_alias(_name("hlive"))


def test_hybrid_on_a_dense_only_collection_is_a_clear_error(store: VectorStore) -> None:
    from embedline.tasks.vectorsets.stores import SparseVector, SparseVectorMissingError

    name = _name("nosparse")
    store.ensure(_spec(name))
    pts, vecs = _points(3)
    store.upsert(name, pts)
    with pytest.raises(SparseVectorMissingError, match=r"qdrant\.sparse=true"):
        store.search_hybrid(name, vecs[0], SparseVector((1,), (1.0,)), k=3)
    with pytest.raises(CollectionNotFoundError):
        store.search_hybrid(_name("missing"), vecs[0], SparseVector(), k=3)
    # a sparse and a dense-only set are different schemas: never the same collection
    with pytest.raises(VectorSetMismatchError, match="sparse"):
        store.ensure(VectorSetSpec(name=name, dims=DIMS, sparse=True, metadata={"fingerprint": "fp1", "model": "m1"}))


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_reopen_keeps_the_sparse_vector(backend: str, tmp_path: Path) -> None:
    from embedline.tasks.vectorsets.sparse import encoder

    params = QdrantParams.model_validate({"backend": backend, "path": str(tmp_path / "q")})
    s = open_store(params, tmp_path)
    s.ensure(VectorSetSpec(name="hyb", dims=DIMS, sparse=True))
    pts, vecs = _sparse_points()
    s.upsert("hyb", pts)
    close_stores()
    s2 = open_store(params, tmp_path)
    spec = s2.describe("hyb")
    assert spec is not None and spec.sparse
    query = encoder({"language": "en"}).query("wing flutter")
    assert s2.search_hybrid("hyb", vecs[2], query, k=1)[0].id == pts[2].id
    close_stores()


@pytest.mark.parametrize("threshold", [10, 1000])
def test_edge_builds_hnsw_only_above_the_index_threshold(
    tmp_path: Path, threshold: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An HNSW build costs about a minute per 100 k points on 2 cores; below qdrant.index_threshold
    # searches are exact anyway, so optimize() must not ask Edge for one (and search stays right).
    params = QdrantParams.model_validate({"path": str(tmp_path / "qdrant"), "index_threshold": threshold})
    store = open_store(params, tmp_path)
    name = _name("idx")
    store.ensure(_spec(name))
    pts, vecs = _points(40)
    store.upsert(name, pts)
    built: list[str] = []
    real_shard = store._shard  # type: ignore[attr-defined]

    class Recording:
        def __init__(self, shard: object) -> None:
            self._shard = shard

        def optimize(self) -> None:
            built.append(name)
            self._shard.optimize()  # type: ignore[attr-defined]

        def __getattr__(self, attr: str) -> object:
            return getattr(self._shard, attr)

    monkeypatch.setattr(store, "_shard", lambda n: Recording(real_shard(n)))
    store.optimize(name)
    assert built == ([name] if threshold < 40 else [])
    monkeypatch.undo()
    assert store.search(name, vecs[7], k=1)[0].id == pts[7].id
    close_stores()
