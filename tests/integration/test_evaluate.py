"""The evaluate stage and the quality gate on a tiny project (fake embedder, embedded Qdrant)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

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
    "space/moon.txt": "The Moon keeps one face toward Earth. Its craters were made by meteorite impacts "
    "and its phases follow the lunar month of about 29.5 days.\n",
    "kitchen/bread.txt": "Bread rises because yeast ferments sugars and releases carbon dioxide. Knead the "
    "dough for ten minutes. Bake at 220 degrees until the crust is brown.\n",
    "kitchen/bread_copy.txt": "Bread rises because yeast ferments sugars and releases carbon dioxide. Knead "
    "the dough for ten minutes. Bake at 220 degrees until the crust is brown.\n",
    "kitchen/omelette.txt": "For an omelette, whisk three eggs with salt, melt butter in a hot pan, pour in "
    "the eggs and fold the omelette once the edges set.\n",
    "kitchen/pasta.txt": "Boil pasta in plenty of salted water, stir it now and then, and drain it a minute "
    "before it is fully soft so it finishes cooking in the sauce.\n",
    "net/tcp.txt": "TCP provides reliable, ordered delivery of a byte stream between applications. It uses "
    "a three-way handshake to open a connection and retransmits lost segments.\n",
    "net/dns.txt": "DNS translates domain names into IP addresses. Resolvers query root, top-level domain "
    "and authoritative name servers and cache the answers for their time to live.\n",
    "garden/tomatoes.md": "# Growing tomatoes\n\nTomatoes need six to eight hours of sun a day. Water them "
    "deeply at the base, and stake the plants early so the stems do not break.\n",
    "garden/compost.txt": "Compost turns kitchen scraps and garden waste into humus. Mix green and brown "
    "material, keep the heap moist, and turn it every few weeks to let air in.\n",
}
QUERIES = {
    "q1": ("how does a black hole form from a collapsing star", {"space/black_holes.md": 2}),
    "q2": ("why does bread dough rise with yeast", {"kitchen/bread.txt": 2, "kitchen/bread_copy.txt": 1}),
    "q3": ("TCP three-way handshake connection", {"net/tcp.txt": 2}),
    "q4": ("how much sun do tomatoes need", {"garden/tomatoes.md": 2}),
    "q5": ("domain names to IP addresses resolvers", {"net/dns.txt": 2}),
    "q6": ("comet tail and coma near the Sun", {"space/comets.txt": 2}),
    "q7": ("how to make an omelette with eggs and butter", {"kitchen/omelette.txt": 2}),
    "q8": ("turn the compost heap garden waste", {"garden/compost.txt": 2}),
}


def write_eval_set(root: Path) -> Path:
    d = root / "data" / "eval"
    (d / "qrels").mkdir(parents=True)
    (d / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items())
    )
    rows = ["query-id\tcorpus-id\tscore"]
    rows += [f"{q}\t{doc}\t{g}" for q, (_, rel) in QUERIES.items() for doc, g in rel.items()]
    (d / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    from embedline.tasks.vectorsets.stores import close_stores

    root = make_project(tmp_path / "proj", {**FAKE, "eval.k": [1, 5, 10], "eval.map_sample": 50}, docs=DOCS)
    write_eval_set(root)
    yield root
    close_stores()


def config(root: Path, *overrides: str) -> Config:
    return load_config(root / "params.yaml", list(overrides))


def ingest(cfg: Config, art: Artifacts, **promote_options: object) -> dict[str, dict[str, object]]:
    from embedline.tasks.pipeline import INGEST_STAGES, run_stage

    stats = {}
    for stage in INGEST_STAGES:  # ... upsert (build), promote (gate + alias swap)
        stats[stage] = run_stage(stage, cfg, art, **(promote_options if stage == "promote" else {}))
    return stats


def test_run_evaluate_reports_sane_metrics_and_writes_plots(project: Path) -> None:
    from embedline.tasks.evaluate import run_evaluate

    cfg, art = config(project), Artifacts(project)
    ingest(cfg, art)
    m = run_evaluate(cfg, art)

    assert m["queries"] == len(QUERIES)
    for key in ("ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10",
                "bm25_ndcg@10", "bm25_mrr@10", "wholedoc_ndcg@10", "wholedoc_recall@10"):
        assert 0.0 <= m[key] <= 1.0, key
    # every query names its topic in plain words: each method finds the right document
    assert m["ndcg@10"] > 0.7 and m["mrr@10"] > 0.7 and m["recall@10"] > 0.9
    assert m["bm25_ndcg@10"] > 0.7 and m["wholedoc_ndcg@10"] > 0.7
    assert m["recall@1"] <= m["recall@5"] <= m["recall@10"]
    assert m["unknown_relevant_docs"] == 0
    assert {"dense_seconds", "bm25_seconds", "wholedoc_seconds"} <= set(m)
    # bread_copy.txt is an exact copy of bread.txt: at least its chunk is a duplicate
    assert m["duplicate_rate"] is not None and 0 < m["duplicate_rate"] < 0.5
    assert m["silhouette"] is not None and -1.0 <= m["silhouette"] <= 1.0
    assert m["map_points"] >= len(DOCS) - 1 and m["map_labels"] == 4
    json.dumps(m)  # a JSON-able DVC metrics dict

    curve = (project / "data" / "metrics" / "recall_curve.csv").read_text().splitlines()
    assert curve[0] == "k,dense,bm25,wholedoc"
    assert len(curve) == 1 + 10
    dense_curve = [float(line.split(",")[1]) for line in curve[1:]]
    assert dense_curve == sorted(dense_curve) and dense_curve[-1] == pytest.approx(m["recall@10"])
    png = (project / "data" / "metrics" / "embedding_map.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_baselines_left_out_of_eval_baselines_are_not_computed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``eval.baselines: [bm25]``: no whole-document vector is embedded (its retriever is never
    built), its metrics and curve column are absent, and the summary shows a dash for it."""
    from embedline.tasks.evaluate import run_evaluate
    from embedline.tasks.evaluation import retrieval
    from embedline.tasks.summary import summary_rows

    cfg, art = config(project, "eval.baselines=[bm25]"), Artifacts(project)
    stats = ingest(cfg, art)

    def refused(ctx: retrieval.EvalContext) -> retrieval.Retriever:
        raise AssertionError("the whole-document baseline was built although eval.baselines leaves it out")

    monkeypatch.setitem(retrieval.RETRIEVERS, "wholedoc", refused)
    m = run_evaluate(cfg, art)
    assert m["ndcg@10"] > 0.7 and m["bm25_ndcg@10"] > 0.7
    assert not [k for k in m if k.startswith("wholedoc_")]
    curve = (project / "data" / "metrics" / "recall_curve.csv").read_text().splitlines()
    assert curve[0] == "k,dense,bm25"
    rows = dict(summary_rows({**stats, "evaluate": m}))
    assert rows["nDCG@10 (dense / bm25 / whole-doc)"].endswith(" / -")


def test_missing_dataset_is_a_note_not_a_failure(project: Path) -> None:
    from embedline.tasks.evaluate import run_evaluate

    m = run_evaluate(config(project, "eval.dataset=data/nowhere"), Artifacts(project))
    assert m["queries"] == 0 and "nowhere" in m["note"]


def test_gate_refuses_a_worse_vector_set_and_accepts_an_equal_one(project: Path) -> None:
    from embedline.tasks.evaluate import QualityGateError, make_gate
    from embedline.tasks.vectorsets.stores import open_store

    art = Artifacts(project)
    good = config(project)
    ingest(good, art)
    store = open_store(good.qdrant, art.root)
    live = store.get_alias(good.qdrant.collection)
    assert live is not None

    # 4-d hashed vectors: a deliberately broken vector set (new fingerprint, so a shadow)
    bad = config(project, "embed.dimensions=4")
    gate = make_gate(bad, art)
    with pytest.raises(QualityGateError) as info:
        ingest(bad, art, gate=gate)
    msg = str(info.value)
    assert "ndcg@10" in msg and "max_regression=0.02" in msg
    assert info.value.shadow_score < info.value.live_score - 0.02
    assert gate.last["gate"] == "refused"
    assert store.get_alias(good.qdrant.collection) == live  # alias untouched
    assert info.value.shadow in store.list_collections()  # shadow kept for inspection

    # a new fingerprint with the same vectors (the fake embedder ignores the model name) passes
    equal = config(project, "embed.model=fake-twin")
    gate = make_gate(equal, art)
    ingest(equal, art, gate=gate)
    assert gate.last["gate"] == "passed"
    assert gate.last["shadow_ndcg@10"] == pytest.approx(gate.last["live_ndcg@10"])
    new_live = store.get_alias(good.qdrant.collection)
    assert new_live is not None and new_live != live


def test_gate_is_a_no_op_when_off_or_without_live_or_dataset(project: Path) -> None:
    from embedline.tasks.evaluate import make_gate

    art = Artifacts(project)
    cfg = config(project)
    gate = make_gate(cfg, art)
    gate("anything", None)  # nothing live yet: nothing to compare
    assert gate.last["gate"] == "no live collection"
    off = make_gate(config(project, "eval.gate=false"), art)
    off("shadow", "live")
    assert off.last["gate"] == "off"
    nodata = make_gate(config(project, "eval.dataset=data/nowhere"), art)
    nodata("shadow", "live")
    assert nodata.last["gate"].startswith("skipped")


def test_evaluate_dataset_ingests_a_beir_corpus_into_its_own_collection(project: Path, tmp_path: Path) -> None:
    from embedline.tasks.evaluate import evaluate_dataset
    from embedline.tasks.evaluation import eval_collection_name

    ds = tmp_path / "Tiny BEIR"
    (ds / "qrels").mkdir(parents=True)
    ids = {path: f"d{i}" for i, path in enumerate(sorted(DOCS))}
    (ds / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": ids[p], "title": p.rsplit("/", 1)[-1], "text": t.replace("# ", "")}) + "\n"
            for p, t in DOCS.items()
        )
    )
    (ds / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items())
    )
    rows = ["query-id\tcorpus-id\tscore"]
    rows += [f"{q}\t{ids[d]}\t{g}" for q, (_, rel) in QUERIES.items() for d, g in rel.items()]
    (ds / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")

    workdir = project / "data" / "eval-runs" / "tiny"
    results = evaluate_dataset(config(project), ds, workdir)

    assert eval_collection_name(ds) == "eval-tiny-beir"
    assert set(results) == {"dense", "bm25", "wholedoc", "hybrid"}  # its collection has the sparse vector
    for method, m in results.items():
        assert m["queries"] == len(QUERIES), method
        assert m["ndcg@10"] > 0.7 and m["recall@10"] > 0.9, method
    report = json.loads((workdir / "report.json").read_text())
    assert report["collection"] == "eval-tiny-beir" and report["unknown_relevant_docs"] == 0
    assert report["documents"] == len(DOCS) and report["points"] >= len(DOCS) - 1
    assert (workdir / "qdrant").is_dir()
    assert not (project / "data" / "qdrant").exists()  # the project's own store is not touched
    # a second run re-ingests nothing new and scores the same
    again = evaluate_dataset(config(project), ds, workdir)
    assert again["dense"]["ndcg@10"] == pytest.approx(results["dense"]["ndcg@10"])


def test_mismatched_query_set_is_skipped_with_a_warning_and_never_gates(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from embedline.tasks.evaluate import make_gate, run_evaluate

    other = project / "data" / "other-eval"
    (other / "qrels").mkdir(parents=True)
    (other / "queries.jsonl").write_text(json.dumps({"_id": "x1", "text": "subnet mask of a /27"}) + "\n")
    (other / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nx1\tnetworking/subnets.md\t2\n")
    cfg, art = config(project, "eval.dataset=data/other-eval"), Artifacts(project)
    ingest(cfg, art)
    with caplog.at_level(logging.WARNING):
        m = run_evaluate(cfg, art)
    assert m["queries"] == 0 and "does not match the corpus" in m["skipped"]
    assert "ndcg@10" not in m  # no 0.000 score is recorded
    assert any("does not match the corpus" in r.getMessage() for r in caplog.records)
    gate = make_gate(cfg, art)
    gate("shadow-does-not-exist", "live-does-not-exist")  # skipped before scoring any collection
    assert gate.last["gate"].startswith("skipped") and "does not match" in gate.last["gate"]


@pytest.mark.parametrize("overrides", [(), ("qdrant.sparse=true",)])  # with sparse: the hybrid method too
def test_a_rerun_embeds_nothing_and_reuses_the_intrinsic_checks(
    project: Path, monkeypatch: pytest.MonkeyPatch, overrides: tuple[str, ...]
) -> None:
    from embedline.tasks.embed import clear_embedders, peek_embedder
    from embedline.tasks.evaluate import run_evaluate
    from embedline.tasks.evaluation import intrinsic

    cfg, art = config(project, *overrides), Artifacts(project)
    ingest(cfg, art)
    first = run_evaluate(cfg, art)
    clear_embedders()

    def no_recompute(*_a: object, **_k: object) -> None:
        raise AssertionError("intrinsic checks recomputed although the vector set did not change")

    for step in ("intrinsic_checks", "sample_vectors", "checks_of_sample", "save_map"):
        monkeypatch.setattr(intrinsic, step, no_recompute)
    second = run_evaluate(cfg, art)
    assert peek_embedder(cfg.embed) is None  # queries and whole documents all came from the cache
    keys = ["ndcg@10", "wholedoc_ndcg@10", "bm25_ndcg@10", "silhouette", "map_points"]
    for key in keys + (["hybrid_ndcg@10"] if overrides else []):
        assert second[key] == first[key], key
def test_evaluate_stage_writes_the_headline_metrics_and_the_recall_chart(project: Path) -> None:
    """The one DVC metrics file: nDCG@10 and recall@k per method and the counts, no timings; the
    recall chart as a PNG (renders offline), the same bytes when re-drawn from the same curve."""
    from embedline.tasks.pipeline import run_stage
    from embedline.tasks.records import read_json

    cfg, art = config(project), Artifacts(project)
    ingest(cfg, art)
    m = run_stage("evaluate", cfg, art)
    head = read_json(art.metrics / "headline.json")
    dedupe, embed = read_json(art.metric("dedupe")), read_json(art.metric("embed"))
    assert head["ndcg@10"] == {"dense": m["ndcg@10"], "bm25": m["bm25_ndcg@10"], "wholedoc": m["wholedoc_ndcg@10"]}
    assert head["recall@10"]["dense"] == m["recall@10"]  # eval.k is [1, 5, 10] here: recall at the largest k
    assert head["points"] == dedupe["points"] and head["chunks"] == dedupe["input_rows"]
    assert head["duplicates"] == dedupe["input_rows"] - dedupe["points"] > 0
    assert head["texts_embedded"] == embed["texts_embedded"]
    assert not any("seconds" in k for k in head)
    png = art.metrics / "recall_curve.png"
    first = png.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    from embedline.tasks.summary import save_curve_png

    save_curve_png(art.metrics / "recall_curve.csv", png)
    assert png.read_bytes() == first  # deterministic: a DVC output


def test_whole_document_vectors_are_made_while_the_dense_queries_run(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole-document baseline's set-up (its inference) starts with the run, not after the
    dense and BM25 methods: dense's search here waits until the baseline's set-up has begun, which
    never happens when the methods are set up one after another."""
    import threading

    from embedline.tasks.evaluate import run_evaluate
    from embedline.tasks.evaluation import retrieval

    cfg, art = config(project), Artifacts(project)
    ingest(cfg, art)
    started = threading.Event()
    overlapped: list[bool] = []
    wholedoc, dense_search = retrieval.RETRIEVERS["wholedoc"], retrieval.DenseRetriever.search

    def wholedoc_started(ctx: retrieval.EvalContext) -> retrieval.Retriever:
        started.set()
        return wholedoc(ctx)

    def search_after_start(self: retrieval.DenseRetriever, queries: dict[str, str], k: int) -> retrieval.RunDict:
        if type(self) is retrieval.DenseRetriever:
            overlapped.append(started.wait(timeout=15))
        return dense_search(self, queries, k)

    monkeypatch.setitem(retrieval.RETRIEVERS, "wholedoc", wholedoc_started)
    monkeypatch.setattr(retrieval.DenseRetriever, "search", search_after_start)
    m = run_evaluate(cfg, art)
    assert overlapped == [True]
    assert m["wholedoc_ndcg@10"] > 0.7 and m["wholedoc_seconds"] > 0


def test_dense_reads_each_point_source_once_and_answers_as_a_payload_search(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dense evaluation searches without payloads and reads each hit point's source keys from the
    store once per run; its run equals the one built from searches that return the payloads."""
    from embedline.tasks.evaluation.metrics import docs_from_hits
    from embedline.tasks.evaluation.retrieval import SOURCE_KEYS, DenseRetriever, EvalContext
    from embedline.tasks.vectorsets.stores import open_store

    cfg, art = config(project), Artifacts(project)
    ingest(cfg, art)
    store = open_store(cfg.qdrant, art.root)
    retrieved: list[str] = []
    original = type(store).retrieve

    def counting(self: object, collection: str, ids: list[str], **kw: object) -> object:
        retrieved.extend(ids)
        return original(self, collection, ids, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(type(store), "retrieve", counting)
    ctx = EvalContext(cfg=cfg, art=art, collection=cfg.qdrant.collection, query_embed=cfg.embed)
    retriever = DenseRetriever(ctx)
    queries = {q: t for q, (t, _) in QUERIES.items()}
    run = retriever.search(queries, 5)
    assert len(retrieved) == len(set(retrieved)) > 0  # each point read once across all queries

    vecs = retriever.ctx.embed_params
    from embedline.tasks.evaluation.interface import embed_queries

    qv = embed_queries(vecs, list(queries.values()), ctx.cache_path)
    for (qid, _), v in zip(queries.items(), qv, strict=True):
        hits = store.search(cfg.qdrant.collection, v, k=5 * 3, with_payload=SOURCE_KEYS)
        docs = docs_from_hits((h.score, h.payload) for h in hits)
        assert run[qid] == dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:5]), qid
