"""Retrieval metrics against hand-computed values, chunk -> document mapping, BEIR parsing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedline.tasks.evaluation import intrinsic
from embedline.tasks.evaluation.baselines import BM25Retriever, bm25_tokens
from embedline.tasks.evaluation.beir import (
    BeirFormatError,
    iter_corpus,
    load_beir,
    load_qrels,
    load_queries,
)
from embedline.tasks.evaluation.intrinsic import silhouette, source_label, write_curve
from embedline.tasks.evaluation.metrics import (
    docs_from_hits,
    evaluate_run,
    jsonl_record_key,
    mrr_at_k,
    ndcg_at_k,
    payload_sources,
    rank,
    recall_at_k,
    recall_curve,
)
from embedline.tasks.evaluation.retrieval import EvalDoc

pytestmark = pytest.mark.unit

# q1: grades a=3, b=1, c=0 (judged non-relevant), d=2; ranking c, a, x (unjudged), b; d not retrieved.
Q1_JUDGED = {"a": 3, "b": 1, "c": 0, "d": 2}
Q1_RUN = {"c": 0.9, "a": 0.8, "x": 0.7, "b": 0.6}
# DCG = 3/log2(3) + 1/log2(5) = 1.892789 + 0.430677 = 2.323466
# IDCG (3, 2, 1) = 3/1 + 2/log2(3) + 1/2 = 4.761860
Q1_NDCG = 2.3234658187877653 / 4.7618595071429155  # 0.487932


def test_ndcg_hand_computed() -> None:
    ranked = rank(Q1_RUN)
    assert ranked == ["c", "a", "x", "b"]
    assert ndcg_at_k(ranked, Q1_JUDGED, 10) == pytest.approx(0.4879324590, abs=1e-9)
    assert ndcg_at_k(ranked, Q1_JUDGED, 10) == pytest.approx(Q1_NDCG)
    # @2: DCG = 3/log2(3); ideal (3, 2) = 3 + 2/log2(3)
    assert ndcg_at_k(ranked, Q1_JUDGED, 2) == pytest.approx((3 / math.log2(3)) / (3 + 2 / math.log2(3)))
    # a perfect ranking scores 1, a ranking with no relevant document 0
    assert ndcg_at_k(["a", "d", "b"], Q1_JUDGED, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["c", "x"], Q1_JUDGED, 10) == 0.0
    assert ndcg_at_k(["a"], {"z": 0}, 10) == 0.0  # no relevant judgement: 0, not a division error


def test_graded_gains_are_linear() -> None:
    # one relevant doc of grade 2 at rank 2 and grade 1 at rank 1: DCG = 1 + 2/log2(3)
    judged = {"p": 1, "q": 2}
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["p", "q"], judged, 10) == pytest.approx(expected)


def test_recall_and_mrr_hand_computed() -> None:
    ranked = rank(Q1_RUN)
    assert recall_at_k(ranked, Q1_JUDGED, 1) == 0.0
    assert recall_at_k(ranked, Q1_JUDGED, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, Q1_JUDGED, 4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, Q1_JUDGED, 100) == pytest.approx(2 / 3)
    assert mrr_at_k(ranked, Q1_JUDGED, 10) == pytest.approx(0.5)
    assert mrr_at_k(ranked, Q1_JUDGED, 1) == 0.0
    assert mrr_at_k(["x", "y", "z", "b"], Q1_JUDGED, 3) == 0.0
    assert mrr_at_k(["x", "y", "z", "b"], Q1_JUDGED, 10) == pytest.approx(0.25)


def test_ties_break_by_doc_id() -> None:
    assert rank({"b": 1.0, "a": 1.0, "c": 2.0}) == ["c", "a", "b"]
    assert rank({"b": 1.0, "a": 1.0, "c": 2.0}, k=2) == ["c", "a"]


def test_evaluate_run_means_over_scorable_queries() -> None:
    qrels = {"q1": Q1_JUDGED, "q2": {"e": 1}, "q3": {"f": 0}}  # q3 has no relevant doc: not scored
    run = {"q1": Q1_RUN, "q3": {"f": 1.0}}  # q2 missing from the run: scores 0
    m = evaluate_run(run, qrels, ks=(1, 2, 10))
    assert m["queries"] == 2
    assert m["ndcg@10"] == pytest.approx(Q1_NDCG / 2)
    assert m["mrr@10"] == pytest.approx(0.25)
    assert m["recall@1"] == 0.0
    assert m["recall@2"] == pytest.approx(1 / 6)
    assert m["recall@10"] == pytest.approx(1 / 3)
    assert set(m) == {"ndcg@10", "mrr@10", "recall@1", "recall@2", "recall@10", "queries"}


def test_recall_curve_matches_pointwise_recall() -> None:
    qrels = {"q1": Q1_JUDGED, "q2": {"e": 1, "x": 2}}
    run = {"q1": Q1_RUN, "q2": {"x": 0.5, "e": 0.1, "y": 0.3}}
    curve = recall_curve(run, qrels, 6)
    assert len(curve) == 6
    for k in range(1, 7):
        assert curve[k - 1] == pytest.approx(evaluate_run(run, qrels, ks=(k,))[f"recall@{k}"])
    assert curve == sorted(curve)  # non-decreasing
    assert recall_curve({}, {}, 3) == [0.0, 0.0, 0.0]


def test_docs_from_hits_takes_max_score_per_document() -> None:
    hits: list[tuple[float, dict[str, Any]]] = [
        (0.9, {"source": "a.md"}),
        (0.7, {"source": "b.md", "sources": [{"source": "b.md"}, {"source": "c.md", "match": "exact"}]}),
        (0.95, {"source": "a.md"}),
        (0.5, {"source": "c.md"}),
        (0.4, {"source": "d.md", "sources": ["d.md", "e.md"]}),
    ]
    docs = docs_from_hits(hits)
    assert docs == {"a.md": 0.95, "b.md": 0.7, "c.md": 0.7, "d.md": 0.4, "e.md": 0.4}
    assert rank(docs) == ["a.md", "b.md", "c.md", "d.md", "e.md"]


def test_payload_sources_variants() -> None:
    assert payload_sources({"source": "a"}) == ["a"]
    assert payload_sources({"source": "a", "sources": "b"}) == ["a", "b"]
    assert payload_sources({"source": "a", "sources": json.dumps([{"source": "b"}, {"source": "a"}])}) == ["a", "b"]
    assert payload_sources({}) == []


def test_jsonl_record_key_maps_back_to_beir_ids() -> None:
    key = jsonl_record_key()
    assert key("corpus.jsonl#184") == "184"
    assert key("other/file.md") is None
    hits = [(0.8, {"source": "corpus.jsonl#1"}), (0.6, {"source": "notes.md"})]
    assert docs_from_hits(hits, key) == {"1": 0.8}


def _write_beir(root: Path, qrels: str, queries: list[dict] | None = None) -> Path:
    (root / "qrels").mkdir(parents=True)
    qs = queries if queries is not None else [{"_id": "1", "text": "black holes"}, {"_id": "2", "text": "bread"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def test_beir_parsing(tmp_path: Path) -> None:
    root = _write_beir(
        tmp_path / "set",
        "query-id\tcorpus-id\tscore\n1\tastronomy/black_holes.md\t2\n1\tx.jsonl#7\t1\n2\tcooking/bread.md\t0\n",
    )
    (root / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "T", "text": "body"}) + "\n\n" + json.dumps({"_id": 2, "text": "b"}) + "\n"
    )
    ds = load_beir(root)
    assert ds.name == "set" and ds.split == "test"
    assert ds.queries == {"1": "black holes", "2": "bread"}
    assert ds.qrels == {"1": {"astronomy/black_holes.md": 2, "x.jsonl#7": 1}, "2": {"cooking/bread.md": 0}}
    assert ds.evaluable() == {"1": "black holes"}  # query 2 has only a grade-0 judgement
    assert ds.has_corpus
    assert list(iter_corpus(ds.corpus_path)) == [("d1", "T", "body"), ("2", "", "b")]


def test_qrels_without_header_and_space_separated(tmp_path: Path) -> None:
    p = tmp_path / "q.tsv"
    p.write_text("1 d1 1\n1 d2 3\n")
    assert load_qrels(p) == {"1": {"d1": 1, "d2": 3}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("query-id\tcorpus-id\tscore\n1\td1\n", "expected 3"),
        ("query-id\tcorpus-id\tscore\n1\td1\thigh\n", "is not a number"),
    ],
)
def test_bad_qrels_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "test.tsv"
    p.write_text(content)
    with pytest.raises(BeirFormatError, match=rf"test\.tsv:2: .*{message}"):
        load_qrels(p)


def test_bad_queries_are_reported(tmp_path: Path) -> None:
    p = tmp_path / "queries.jsonl"
    p.write_text('{"_id": "1", "text": "ok"}\n{"_id": "1", "text": "again"}\n')
    with pytest.raises(BeirFormatError, match=r"queries\.jsonl:2: duplicate query id"):
        load_queries(p)
    p.write_text('{"_id": "1", "text": "ok"}\nnot json\n')
    with pytest.raises(BeirFormatError, match=r":2: not valid JSON"):
        load_queries(p)
    p.write_text('{"text": "no id"}\n')
    with pytest.raises(BeirFormatError, match="no '_id'"):
        load_queries(p)


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a BEIR-layout folder"):
        load_beir(tmp_path / "nope")


def test_bm25_ranks_matching_documents_first() -> None:
    docs = [
        EvalDoc("astronomy/black_holes.md", "Black holes", "A black hole bends light near the event horizon.", None),
        EvalDoc("cooking/bread.md", "Bread", "Yeast makes dough rise.", None),
        EvalDoc("astronomy/moon.md", "The Moon", "The moon has craters and no atmosphere.", None),
    ]
    bm25 = BM25Retriever(docs)
    run = bm25.search({"q": "how does yeast make bread rise", "empty": "the of and"}, k=10)
    assert rank(run["q"])[0] == "cooking/bread.md"
    assert "astronomy/moon.md" not in run["q"]  # no shared term: not retrieved
    assert run["empty"] == {}  # only stop words
    assert bm25_tokens("The Event-Horizon, 2024!", frozenset({"the"})) == ["event", "horizon", "2024"]


def test_silhouette_and_labels() -> None:
    assert source_label("astronomy/black_holes.md") == "astronomy"
    assert source_label("a/b/c.txt") == "a"
    assert source_label("corpus.jsonl#12") == "."
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 8)) * 0.05 + np.eye(8)[0]
    b = rng.normal(size=(10, 8)) * 0.05 + np.eye(8)[1]
    s = silhouette(np.vstack([a, b]), ["a"] * 10 + ["b"] * 10)
    assert s is not None and s > 0.8
    assert silhouette(np.vstack([a, b]), ["a"] * 20) is None  # one label: undefined


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silhouette_equals_scikit_learns(dtype: type) -> None:
    """The numpy silhouette is scikit-learn's cosine silhouette_score, to the last bit (same dtype,
    same reductions), on clusters of every shape: overlapping, a singleton, a zero vector."""
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(7)
    for n, d, k, spread in [(40, 8, 3, 0.3), (257, 33, 7, 2.0), (600, 64, 12, 1.0), (9, 4, 8, 0.5)]:
        centres = rng.normal(size=(k, d))
        codes = rng.integers(0, k, size=n)
        x = (centres[codes] + rng.normal(scale=spread, size=(n, d))).astype(dtype)
        x[0] = 0.0  # a zero vector: sklearn's normalize leaves it at 0
        labels = [f"folder{c}" for c in codes]
        labels[-1] = "alone"  # a singleton cluster scores 0
        want = float(silhouette_score(x, labels, metric="cosine"))
        assert float(np.mean(intrinsic._silhouette_samples(x, labels))) == want
        assert silhouette(x, labels) == round(want, 6)


def test_embedding_map_is_bounded_and_byte_stable(tmp_path: Path) -> None:
    """The t-SNE map (a DVC out) draws at most MAP_MAX_POINTS points and is the same bytes twice;
    the 2-D projection keeps separated groups apart (each point's nearest neighbour in its group)."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 16)) * 3
    codes = rng.integers(0, 4, size=intrinsic.MAP_MAX_POINTS + 37)
    x = (centres[codes] + rng.normal(size=(codes.size, 16))).astype(np.float32)
    keep = intrinsic.map_subset(x.shape[0])
    assert keep.size == intrinsic.MAP_MAX_POINTS and np.all(np.diff(keep) > 0)
    xy = intrinsic.project_2d(x[:120])
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (codes[:120][d.argmin(axis=1)] == codes[:120]).mean() > 0.95
    labels = [f"g{c}" for c in codes]
    a = intrinsic.save_map(x, labels, tmp_path / "a.png").read_bytes()
    b = intrinsic.save_map(x, labels, tmp_path / "b.png").read_bytes()
    assert a == b and a[:8] == b"\x89PNG\r\n\x1a\n"


def test_intrinsic_checks_import_no_scikit_learn(tmp_path: Path) -> None:
    """Silhouette, map and recall chart run without importing scikit-learn (its import pulls
    scipy.stats and pandas: seconds of CPU in every first evaluate) or matplotlib (its import and
    layout were ~1.2 CPU s of a first evaluate for two fixed charts)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from embedline.tasks.evaluation import intrinsic as i\n"
        "x = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)\n"
        "lab = ['a'] * 15 + ['b'] * 15\n"
        "assert i.silhouette(x, lab) is not None\n"
        f"i.save_map(x, lab, Path({str(tmp_path / 'm.png')!r}))\n"
        f"i.write_curve(Path({str(tmp_path / 'c.csv')!r}), {{'dense': [0.5, 1.0]}})\n"
        "from embedline.tasks.summary import save_curve_png\n"
        f"save_curve_png({str(tmp_path / 'c.csv')!r}, {str(tmp_path / 'c.png')!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'pandas', 'torch', 'matplotlib')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_curve_file(tmp_path: Path) -> None:
    p = write_curve(tmp_path / "m" / "recall_curve.csv", {"dense": [0.5, 1.0], "bm25": [0.25, 0.5]})
    assert p.read_text().splitlines() == ["k,dense,bm25", "1,0.500000,0.250000", "2,1.000000,0.500000"]
