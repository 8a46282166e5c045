"""Training pairs: mining, hard negatives (own document and near-duplicates excluded), sampling,
the leakage check, the query split, the pairs artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedline.tasks.config import ConfigError, load_config
from embedline.tasks.finetune.pairs import (
    LeakageError,
    Pair,
    PairStats,
    Passage,
    add_hard_negatives,
    beir_pairs,
    check_no_leakage,
    document_texts,
    fill_negatives,
    mined_pairs,
    read_pairs,
    sample_pairs,
    write_pairs,
)
from embedline.tasks.finetune.split import split_queries
from tests.finetunedata import TOPICS, write_beir

pytestmark = pytest.mark.unit


# ---- mining --------------------------------------------------------------------------------------
def test_heading_pairs_point_at_their_section_without_the_heading() -> None:
    passages = [
        Passage("p1", ("guide.md",), "Install\n\n## Install\nRun pip install embedline in a fresh venv.",
                title="Guide", heading_path=("Guide", "Install"), chunk_index=1),
        Passage("p2", ("guide.md",), "Guide > Install\n\nThen check the version it prints.",
                title="Guide", heading_path=("Guide", "Install"), chunk_index=2),
        Passage("p0", ("guide.md",), "# Guide\nThis guide explains the tool end to end.",
                title="Guide", heading_path=("Guide",), chunk_index=0),
    ]
    stats = PairStats()
    pairs = {p.anchor: p for p in mined_pairs(passages, stats=stats)}
    assert set(pairs) == {"Guide", "Guide > Install"}
    # the section's FIRST chunk, its heading lines stripped
    assert pairs["Guide > Install"].positive == "Run pip install embedline in a fresh venv."
    assert pairs["Guide"].positive == "This guide explains the tool end to end."
    assert all(p.kind == "heading" and p.docs == ("guide.md",) for p in pairs.values())
    assert stats.counts == {"heading": 2}  # no extra title pair: a markdown title is its H1


def test_title_pairs_strip_a_leading_copy_and_skip_file_names_and_short_titles() -> None:
    passages = [
        Passage("a", ("corpus.jsonl#1",), "experimental wing study . an experimental study of a wing in a "
                "propeller slipstream was made", title="experimental wing study ."),
        Passage("b", ("notes/tcp.txt",), "TCP opens a connection with a handshake.", title="tcp.txt"),
        Passage("c", ("x.json#2",), "A body long enough to be a positive passage.", title="ab"),
    ]
    stats = PairStats()
    pairs = mined_pairs(passages, min_anchor_chars=4, stats=stats)
    assert [(p.anchor, p.positive, p.kind) for p in pairs] == [
        ("experimental wing study .", "an experimental study of a wing in a propeller slipstream was made", "title")
    ]
    assert stats.counts["skipped_title_anchor"] == 2


def test_beir_pairs_one_per_relevant_document_and_missing_documents_counted() -> None:
    queries = {"q1": "wing flutter", "q2": "heat transfer"}
    qrels = {"q1": {"d1": 2, "d2": 1, "d0": 0}, "q2": {"d9": 1}}
    stats = PairStats()
    pairs = beir_pairs(queries, qrels, {"d1": "one", "d2": "two"}, stats)
    assert [(p.query_id, p.positive, p.docs) for p in pairs] == [
        ("q1", "one", ("d1", "d2")), ("q1", "two", ("d1", "d2"))
    ]
    assert stats.counts == {"missing_docs": 1, "train-split": 2}


def test_document_texts_join_chunks_in_order_for_every_source_of_a_collapsed_point() -> None:
    passages = [Passage("2", ("a",), "second", chunk_index=1), Passage("1", ("a", "a-copy"), "first")]
    assert document_texts(passages) == {"a": "first\nsecond", "a-copy": "first"}


# ---- hard negatives ------------------------------------------------------------------------------
def _unit(*xs: float) -> list[float]:
    v = np.array(xs, dtype=np.float32)
    return list(v / np.linalg.norm(v))


def test_hard_negative_skips_own_document_collapsed_copies_and_near_duplicates() -> None:
    passages = [
        Passage("pos", ("doc-a",), "the positive passage"),
        Passage("own", ("doc-a",), "another chunk of the positive's document"),
        Passage("copy", ("doc-c", "doc-a"), "a collapsed duplicate that also stands for doc-a"),
        Passage("near", ("doc-b",), "a near-duplicate of the positive in another document"),
        Passage("same", ("doc-e",), "The  positive passage"),  # same text, other document
        Passage("good", ("doc-d",), "a related but different passage"),
        Passage("far", ("doc-f",), "unrelated"),
    ]
    vectors = np.array([
        _unit(1, 0.05, 0), _unit(1, 0.1, 0), _unit(1, 0, 0.01), _unit(1, 0.06, 0.01),
        _unit(0.9, 0.2, 0.4), _unit(0.8, 0.6, 0), _unit(0, 0, 1),
    ])
    anchor = np.array([_unit(1, 0, 0)])
    pair = Pair(anchor="query", positive="the positive passage", kind="heading", docs=("doc-a",))
    stats = PairStats()
    [out] = add_hard_negatives([pair], anchor, passages, vectors, depth=10, near_duplicate=0.95, stats=stats)
    assert (out.negative, out.negative_doc) == ("a related but different passage", "doc-d")
    assert stats.counts["excluded_same_doc"] == 3  # pos, own, copy
    assert stats.counts["excluded_near_duplicate"] == 1  # near
    assert stats.counts["excluded_same_text"] == 1
    # the anchor's OTHER positive documents are excluded too
    [other] = add_hard_negatives([Pair("query", "the positive passage", "train-split", ("doc-a", "doc-d"))],
                                 anchor, passages, vectors, depth=10, near_duplicate=0.95)
    assert other.negative_doc == "doc-f"


def test_no_admissible_negative_within_depth_then_a_seeded_random_one() -> None:
    passages = [Passage("p", ("a",), "alpha text"), Passage("q", ("b",), "beta text")]
    vectors = np.array([_unit(1, 0), _unit(0.99, 0.01)])
    pairs = [Pair("x", "alpha text", "title", ("a",)), Pair("y", "beta text", "title", ("b",))]
    stats = PairStats()
    out = add_hard_negatives(pairs, np.array([_unit(1, 0), _unit(1, 0)]), passages, vectors,
                             depth=2, near_duplicate=0.9, stats=stats)
    assert [p.negative for p in out] == [None, None] and stats.counts["no_hard_negative"] == 2
    filled = fill_negatives(out, seed=1, stats=stats)
    assert [(p.negative, p.negative_doc) for p in filled] == [("beta text", "b"), ("alpha text", "a")]
    assert fill_negatives(out, seed=1) == filled


def test_sample_is_seeded_and_independent_of_input_order() -> None:
    pairs = [Pair(f"a{i}", f"p{i}", "title", (f"d{i}",)) for i in range(50)]
    first = sample_pairs(pairs, 10, seed=3)
    assert len(first) == 10 and first == sample_pairs(list(reversed(pairs)), 10, seed=3)
    assert first != sample_pairs(pairs, 10, seed=4)


def test_pairs_artifact_round_trips_byte_stable(tmp_path: Path) -> None:
    pairs = [Pair("a", "p", "train-split", ("d1", "d2"), "q1", "n", "d3"), Pair("b", "ü", "title", ("d",))]
    sha1 = write_pairs(tmp_path / "pairs.jsonl", pairs)
    data = (tmp_path / "pairs.jsonl").read_bytes()
    assert write_pairs(tmp_path / "pairs.jsonl", pairs) == sha1
    assert (tmp_path / "pairs.jsonl").read_bytes() == data
    assert read_pairs(tmp_path / "pairs.jsonl") == pairs


# ---- leakage and splits --------------------------------------------------------------------------
def test_a_query_in_both_splits_is_an_error() -> None:
    check_no_leakage({"q1", "q2"}, {"q3"})
    with pytest.raises(LeakageError, match=r"1 query ids .*'q2'"):
        check_no_leakage({"q1", "q2"}, {"q2", "q3"})


def test_make_pairs_refuses_a_dataset_whose_splits_share_a_query(tmp_path: Path) -> None:
    from embedline.tasks.finetune.stage import make_pairs

    ds = write_beir(tmp_path / "ds", train=["bread", "tcp"], test=["tcp", "volcano"], corpus=False)
    passages = [Passage(t, (f"d-{t}",), text) for t, (_, text) in TOPICS.items()]
    cfg = load_config(None)
    with pytest.raises(LeakageError, match="'tcp'"):
        make_pairs(cfg, ds, passages, PairStats())
    ok = write_beir(tmp_path / "ok", train=["bread", "tcp"], test=["volcano"], corpus=False)
    pairs, source = make_pairs(cfg, ok, passages, PairStats())
    assert source == "train-split" and sorted(p.query_id for p in pairs) == ["bread", "tcp"]


def test_split_queries_is_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    src = write_beir(tmp_path / "src", train=[], test=list(TOPICS))
    a = split_queries(src, tmp_path / "a", train_fraction=0.5, seed=7)
    split_queries(src, tmp_path / "b", train_fraction=0.5, seed=7)
    assert a["train_queries"] == 3 and a["test_queries"] == 3
    for name in ("train.tsv", "test.tsv"):
        assert (tmp_path / "a" / "qrels" / name).read_bytes() == (tmp_path / "b" / "qrels" / name).read_bytes()
    from embedline.tasks.evaluation.beir import load_qrels

    train = load_qrels(tmp_path / "a" / "qrels" / "train.tsv")
    test = load_qrels(tmp_path / "a" / "qrels" / "test.tsv")
    assert not set(train) & set(test) and set(train) | set(test) == set(TOPICS)
    assert (tmp_path / "a" / "corpus.jsonl").read_bytes() == (src / "corpus.jsonl").read_bytes()
    with pytest.raises(ValueError, match="another folder"):
        split_queries(src, src)


def test_finetune_params_validate() -> None:
    cfg = load_config(None, ["finetune.matryoshka_dims=[64, 384, 128]"])
    assert cfg.finetune.matryoshka_dims == (384, 128, 64)
    with pytest.raises(ConfigError, match="never evaluated on the queries it was trained on"):
        load_config(None, ["finetune.eval_split=train"])
    with pytest.raises(ConfigError, match=r"valid keys here: .*epochs"):
        load_config(None, ["finetune.epoch=2"])


# ---- finetune.pairs: labelled | mined | both ------------------------------------------------------
def _titled_passages() -> list[Passage]:
    """The passages a vector set of ``write_beir(titles=True)`` holds: each text repeats its title."""
    from tests.finetunedata import title_of

    return [Passage(t, (f"d-{t}",), f"{title_of(t)} {text}", title=title_of(t)) for t, (_, text) in TOPICS.items()]


def test_pairs_mode_both_is_the_union_of_labelled_and_title_pairs_without_held_out_queries(tmp_path: Path) -> None:
    from embedline.tasks.finetune.stage import make_pairs
    from tests.finetunedata import title_of

    train, test = ["bread", "tcp"], ["volcano", "printing"]
    ds = write_beir(tmp_path / "ds", train=train, test=test, titles=True)
    passages = _titled_passages()
    labelled, src_l = make_pairs(load_config(None, ["finetune.pairs=labelled"]), ds, passages, PairStats())
    mined, src_m = make_pairs(load_config(None, ["finetune.pairs=mined"]), ds, passages, PairStats())
    stats = PairStats()
    both, src_b = make_pairs(load_config(None, ["finetune.pairs=both"]), ds, passages, stats)
    assert (src_l, src_m, src_b) == ("train-split", "mined", "train-split+mined")
    assert both == labelled + mined
    assert stats.counts == {"train-split": 2, "title": len(TOPICS)}
    # title -> body: the repeated title stripped from the front of the text
    by_anchor = {p.anchor: p for p in mined}
    assert by_anchor[title_of("tcp")].positive == TOPICS["tcp"][1]
    assert all(p.kind == "title" and p.query_id is None for p in mined)
    # no held-out query, by id or by text, is ever an anchor or inside a pair
    held_out_texts = {TOPICS[t][0] for t in test}
    assert {p.query_id for p in both} - {None} == set(train)
    assert not any(q in p.anchor or q in p.positive for p in both for q in held_out_texts)
    # auto: today's behaviour (the train split when there is one)
    auto, src_a = make_pairs(load_config(None), ds, passages, PairStats())
    assert (auto, src_a) == (labelled, "train-split")


def test_pairs_mode_needing_a_train_split_says_so_and_both_still_checks_leakage(tmp_path: Path) -> None:
    from embedline.tasks.finetune.stage import make_pairs

    no_train = write_beir(tmp_path / "no-train", train=[], test=["volcano"], titles=True)
    passages = _titled_passages()
    for mode in ("labelled", "both"):
        with pytest.raises(FileNotFoundError, match=rf"finetune.pairs={mode} needs a BEIR train split"):
            make_pairs(load_config(None, [f"finetune.pairs={mode}"]), no_train, passages, PairStats())
    pairs, source = make_pairs(load_config(None), no_train, passages, PairStats())  # auto: mined
    assert source == "mined" and len(pairs) == len(TOPICS)
    leaky = write_beir(tmp_path / "leaky", train=["tcp"], test=["tcp"], titles=True)
    with pytest.raises(LeakageError, match="'tcp'"):
        make_pairs(load_config(None, ["finetune.pairs=both"]), leaky, passages, PairStats())


def test_pairs_mode_is_validated_and_part_of_the_model_fingerprint() -> None:
    from embedline.tasks.finetune.train import model_fingerprint

    with pytest.raises(ConfigError, match=r"finetune.pairs.*'auto', 'labelled', 'mined' or 'both'"):
        load_config(None, ["finetune.pairs=union"])
    fps = {model_fingerprint("m", "r", "sha", load_config(None, [f"finetune.pairs={m}"]).finetune)
           for m in ("auto", "labelled", "mined", "both")}
    assert len(fps) == 4


def test_max_pairs_never_cuts_silently_and_the_default_holds_a_cranfield_union() -> None:
    from embedline.tasks.finetune.stage import cap_pairs

    pairs = [Pair(f"a{i}", f"p{i}", "title", (f"d{i}",)) for i in range(5)]
    stats = PairStats()
    assert cap_pairs(pairs, 5, 42, stats) == sample_pairs(pairs, 5, 42) and stats.counts == {}
    kept = cap_pairs(pairs, 3, 42, stats)
    assert len(kept) == 3 and stats.counts == {"over_max_pairs": 2}
    # Cranfield's 60 % train split: 991 labelled + 1,396 title pairs fit under the default
    assert load_config(None).finetune.max_pairs >= 991 + 1396
