"""Hybrid retrieval end to end on a tiny project (fake embedder, embedded Qdrant): a vector set with
the BM25 sparse vector, hybrid search (API and CLI), the hybrid retriever in the evaluation
harness, switching sparse on as a new vector set, export/import, and dense-only sets unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, load_config
from tests.conftest import FAKE, make_project

pytestmark = pytest.mark.integration

DOCS = {
    "space/black_holes.md": "# Black holes\n\nA black hole forms when a massive star collapses under its own "
    "gravity. Nothing, not even light, escapes past the event horizon of a black hole.\n",
    "space/comets.txt": "Comets are icy bodies that grow a glowing coma and a long tail when their orbit "
    "brings them close to the Sun, as the ice turns to gas.\n",
    "kitchen/bread.txt": "Bread rises because yeast ferments sugars and releases carbon dioxide. Knead the "
    "dough for ten minutes. Bake at 220 degrees until the crust is brown.\n",
    "kitchen/omelette.txt": "For an omelette, whisk three eggs with salt, melt butter in a hot pan, pour in "
    "the eggs and fold the omelette once the edges set.\n",
    "net/tcp.txt": "TCP provides reliable, ordered delivery of a byte stream between applications. It uses "
    "a three-way handshake to open a connection and retransmits lost segments.\n",
    "net/dns.txt": "DNS translates domain names into IP addresses. Resolvers query root, top-level domain "
    "and authoritative name servers and cache the answers for their time to live.\n",
    "garden/compost.txt": "Compost turns kitchen scraps and garden waste into humus. Mix green and brown "
    "material, keep the heap moist, and turn it every few weeks to let air in.\n",
}
QUERIES = {
    "q1": ("how does a black hole form from a collapsing star", "space/black_holes.md"),
    "q2": ("why does bread dough rise with yeast", "kitchen/bread.txt"),
    "q3": ("TCP three-way handshake connection", "net/tcp.txt"),
    "q4": ("domain names to IP addresses resolvers", "net/dns.txt"),
    "q5": ("comet tail and coma near the Sun", "space/comets.txt"),
    "q6": ("how to make an omelette with eggs and butter", "kitchen/omelette.txt"),
}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    from embedline.tasks.vectorsets.stores import close_stores

    root = make_project(tmp_path / "proj", {**FAKE, "eval.k": [1, 5, 10], "eval.map_sample": 50}, docs=DOCS)
    d = root / "data" / "eval"
    (d / "qrels").mkdir(parents=True)
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items()))
    rows = ["query-id\tcorpus-id\tscore", *(f"{q}\t{doc}\t1" for q, (_, doc) in QUERIES.items())]
    (d / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    yield root
    close_stores()


def config(root: Path, *overrides: str) -> Config:
    return load_config(root / "params.yaml", list(overrides))


def ingest(cfg: Config, art: Artifacts) -> dict[str, dict[str, Any]]:
    from embedline.tasks.pipeline import INGEST_STAGES, run_stage

    return {stage: run_stage(stage, cfg, art) for stage in INGEST_STAGES}


def test_sparse_vector_set_answers_hybrid_search_and_evaluation(project: Path) -> None:
    from embedline.tasks.evaluate import run_evaluate
    from embedline.tasks.vectorsets.search import search
    from embedline.tasks.vectorsets.sparse import RECIPE_KEY, encoder_for, sparse_for
    from embedline.tasks.vectorsets.stores import open_store
    from embedline.tasks.vectorsets.verify import verify

    cfg, art = config(project, "qdrant.sparse=true"), Artifacts(project)
    stats = ingest(cfg, art)
    store = open_store(cfg.qdrant, art.root)
    spec = store.describe("embedline")
    assert spec is not None and spec.sparse and spec.metadata[RECIPE_KEY]["language"] == "en"
    assert spec.name == f"embedline-{stats['upsert']['fingerprint']}"
    enc = encoder_for(spec)
    points = list(store.scan("embedline", with_vectors=True))
    assert len(points) == stats["upsert"]["points_total"] >= len(DOCS)
    for p in points:  # every point carries the BM25 vector of its own title + text
        assert p.sparse is not None and len(p.sparse) > 0 and p.vector is not None
        assert p.sparse.as_dict() == pytest.approx(sparse_for(p.payload or {}, enc).as_dict(), rel=1e-5)

    hits = search(cfg, art, "TCP three-way handshake", k=3, mode="hybrid")
    assert hits[0].source == "net/tcp.txt" and len(hits) == 3
    assert hits[0].score > hits[-1].score > 0  # RRF scores
    assert verify(cfg, art).ok

    m = run_evaluate(cfg, art)
    for key in ("hybrid_ndcg@10", "hybrid_mrr@10", "hybrid_recall@1", "hybrid_recall@10"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["hybrid_ndcg@10"] > 0.7 and m["hybrid_recall@10"] == 1.0 and "hybrid_seconds" in m
    assert m["ndcg@10"] > 0.7 and m["bm25_ndcg@10"] > 0.7  # the other rows are still there
    curve = (project / "data" / "metrics" / "recall_curve.csv").read_text().splitlines()
    assert curve[0] == "k,dense,bm25,wholedoc,hybrid"

    again = ingest(cfg, art)["upsert"]  # a second run changes nothing
    assert (again["added"], again["updated"], again["deleted"]) == (0, 0, 0)


def test_dense_only_set_is_unchanged_refuses_hybrid_and_switches_to_sparse(project: Path) -> None:
    from typer.testing import CliRunner

    from embedline.flows.cli import app
    from embedline.tasks.embed import fingerprint_for
    from embedline.tasks.evaluate import run_evaluate
    from embedline.tasks.pipeline import run_stage
    from embedline.tasks.vectorsets.search import search
    from embedline.tasks.vectorsets.stores import SparseVectorMissingError, open_store

    art = Artifacts(project)
    dense = config(project)
    ingest(dense, art)
    store = open_store(dense.qdrant, art.root)
    dense_col = store.get_alias("embedline")
    spec = store.describe("embedline")
    assert spec is not None and not spec.sparse and dense_col == f"embedline-{fingerprint_for(dense)}"
    assert all(p.sparse is None for p in store.scan("embedline", with_vectors=True))
    with pytest.raises(SparseVectorMissingError, match=r"qdrant\.sparse=true"):
        search(dense, art, "bread", mode="hybrid")
    m = run_evaluate(dense, art)
    assert not any(k.startswith("hybrid") for k in m) and m["ndcg@10"] > 0.7
    with pytest.raises(SparseVectorMissingError):
        run_evaluate(config(project, "eval.hybrid=true"), art)  # asked for: fail, clearly
    params = str(project / "params.yaml")
    res = CliRunner().invoke(app, ["search", "bread dough", "--hybrid", "--params", params])
    assert res.exit_code == 1 and "qdrant.sparse=true" in res.output

    sparse = config(project, "qdrant.sparse=true")
    # the manifest still carries the dense-only fingerprint: upserting it as sparse is refused
    with pytest.raises(ValueError, match="re-run the embed stage"):
        run_stage("upsert", sparse, art)
    stats = ingest(sparse, art)
    assert stats["embed"]["texts_embedded"] == 0  # same vectors: all from the cache
    assert stats["upsert"]["new_vector_set"] and stats["promote"]["promoted"]
    live = store.get_alias("embedline")
    assert live != dense_col and dense_col in store.list_collections()  # the dense set is kept
    res = CliRunner().invoke(app, ["search", "bread dough", "--hybrid", "-k", "2", "--params", params,
                                   "--set", "qdrant.sparse=true"])
    assert res.exit_code == 0, res.output
    first = next(line for line in res.output.splitlines() if line.strip().startswith("1."))
    assert "kitchen/bread.txt" in first


def test_export_import_recomputes_the_sparse_vectors(project: Path, tmp_path: Path) -> None:
    from embedline.tasks.vectorsets.search import search
    from embedline.tasks.vectorsets.stores import open_store
    from embedline.tasks.vectorsets.transfer import export_points, import_points

    cfg, art = config(project, "qdrant.sparse=true"), Artifacts(project)
    ingest(cfg, art)
    out = tmp_path / "points.jsonl"
    n = export_points(cfg, art, out, "jsonl", with_vectors=True)
    assert json.loads(out.read_text().splitlines()[0])["_meta"]["sparse"] is True

    local = config(project, "qdrant.sparse=true", "qdrant.backend=local", f"qdrant.path={tmp_path / 'local'}")
    assert import_points(local, art, out) == n
    src, dst = open_store(cfg.qdrant, art.root), open_store(local.qdrant, art.root)
    spec = dst.describe("embedline")
    assert spec is not None and spec.sparse and spec.name == src.get_alias("embedline")
    want = {p.id: p.sparse for p in src.scan("embedline", with_vectors=True)}
    got = {p.id: p.sparse for p in dst.scan("embedline", with_vectors=True)}
    assert set(got) == set(want)
    for pid, sv in got.items():
        assert sv is not None and want[pid] is not None
        assert sv.as_dict() == pytest.approx(want[pid].as_dict(), rel=1e-5)  # type: ignore[union-attr]
    assert search(local, art, "comet tail coma", k=1, mode="hybrid")[0].source == "space/comets.txt"
