"""Dedupe on planted exact and near duplicates: precision/recall, determinism, policies, report."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from embedline.tasks import shards
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, load_config
from embedline.tasks.dedupe import DedupeInputError, run_dedupe
from embedline.tasks.neardup import Components, lexical_groups, range_pairs
from embedline.tasks.records import read_json
from embedline.tasks.vector_shards import write_vector_shard
from tests.chunkdata import Item, make_chunk, near, unit, write_artifacts

pytestmark = pytest.mark.unit
DIMS = 64


def _cfg(**dedupe: object) -> Config:
    return load_config(None, {f"dedupe.{k}": v for k, v in dedupe.items()})


FILLER = ("with the same twenty words of shared body text that every planted copy repeats so a small "
          "edit keeps the texts near identical")


def _base(g: int) -> str:
    return f"base text {g} {FILLER}"


def _planted(seed: int = 7) -> tuple[list[Item], dict[str, int]]:
    """300 distinct texts; 40 of them get 1-4 near copies (cos 0.965-0.995); 20 exact copies;
    30 hard negatives (cos 0.80-0.88). Returns items and truth: source -> group id."""
    rng = np.random.default_rng(seed)
    items: list[Item] = []
    truth: dict[str, int] = {}
    bases = [unit(rng, DIMS) for _ in range(300)]
    for g, b in enumerate(bases):
        src = f"base/{g}.txt"
        items.append(Item(src, 0, _base(g), b))
        truth[src] = g
    for g in range(40):
        for c in range(1 + g % 4):
            src = f"near/{g}-{c}.txt"
            items.append(Item(src, 0, f"{_base(g)} rev {c}", near(rng, bases[g], rng.uniform(0.965, 0.995))))
            truth[src] = g
    for g in range(100, 120):
        items.append(Item(f"exact/{g}.txt", 0, _base(g), bases[g]))  # same text, same vector
        truth[f"exact/{g}.txt"] = g
    for k, g in enumerate(range(200, 230)):
        src = f"hard/{g}.txt"
        items.append(Item(src, 0, f"hard negative {g}", near(rng, bases[g], rng.uniform(0.80, 0.88))))
        truth[src] = 1000 + k
    order = rng.permutation(len(items))
    return [items[i] for i in order], truth


def _rows(art: Artifacts) -> list[dict]:
    return shards.read_table(art.deduped).to_pylist()


def _pair_scores(rows: list[dict], truth: dict[str, int]) -> tuple[float, float, int, int]:
    """Pair precision/recall among stored (unique-text) rows, from canonical_id groups."""
    pred = {r["source"]: r["canonical_id"] for r in rows}
    srcs = sorted(pred)
    tp = fp = fn = 0
    for a, b in itertools.combinations(srcs, 2):
        same_pred = pred[a] == pred[b]
        same_true = truth[a] == truth[b]
        tp += same_pred and same_true
        fp += same_pred and not same_true
        fn += same_true and not same_pred
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, tp, fp + fn


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_planted_near_duplicates_precision_recall(tmp_path: Path, method: str) -> None:
    art = Artifacts(tmp_path)
    items, truth = _planted()
    write_artifacts(art, items)
    stats = run_dedupe(_cfg(policy="keep_canonical", method=method, threshold=0.95), art)
    rows = _rows(art)
    precision, recall, tp, errors = _pair_scores(rows, truth)
    print(f"\n[{method}] near-dup pair precision={precision:.4f} recall={recall:.4f} (tp={tp}, errors={errors})")
    assert stats["method"] == method
    assert stats["exact_removed"] == 20 and stats["unique_texts"] == len(items) - 20
    assert precision == 1.0
    assert recall >= (1.0 if method == "exact" else 0.97)
    planted_near = sum(1 + g % 4 for g in range(40))
    if method == "exact":
        assert stats["near_duplicates"] == planted_near and stats["near_groups"] == 40
    assert stats["points"] == len(rows) == len(items) - 20  # keep_canonical stores every unique text


def test_exact_duplicates_collapse_with_every_source(tmp_path: Path) -> None:
    art = Artifacts(tmp_path)
    rng = np.random.default_rng(1)
    v, w = unit(rng, DIMS), unit(rng, DIMS)
    items = [Item("a.md", 0, "same words", v), Item("b.md", 3, "same words", v), Item("c.md", 1, "same words", v),
             Item("d.md", 0, "other", w)]
    chunks = write_artifacts(art, items)
    stats = run_dedupe(_cfg(), art)
    rows = _rows(art)
    assert stats["exact_removed"] == 2 and stats["points"] == 2 and stats["input_rows"] == 4
    rep = next(r for r in rows if r["text"] == "same words")
    expected_rep = min(c.chunk_id for c in chunks if c.text == "same words")
    assert rep["chunk_id"] == expected_rep
    srcs = json.loads(rep["sources"])
    assert sorted(s["source"] for s in srcs) == ["a.md", "b.md", "c.md"]
    assert [s["chunk_id"] for s in srcs] == sorted(s["chunk_id"] for s in srcs)
    assert all(s["match"] == "exact" for s in srcs)
    # row indexes the vector shard of the same index and the point id is uuid5(chunk id)
    assert items[rep["row"]].text == "same words"
    assert rep["point_id"] == make_chunk(items[rep["row"]].source, items[rep["row"]].index, "same words").point_id


def test_representative_is_deterministic_under_row_order(tmp_path: Path) -> None:
    items, _ = _planted(seed=3)
    results = []
    for k, seq in enumerate([items, items[::-1]]):
        art = Artifacts(tmp_path / str(k))
        write_artifacts(art, seq)
        run_dedupe(_cfg(policy="link"), art)
        results.append({(r["chunk_id"], r["canonical_id"], r["sources"], r["duplicates"]) for r in _rows(art)})
    assert results[0] == results[1]
    # the representative of every group is its smallest chunk id
    art = Artifacts(tmp_path / "0")
    for r in _rows(art):
        ids = [r["chunk_id"]] + [d["chunk_id"] for d in json.loads(r["duplicates"])]
        ids += [s["chunk_id"] for s in json.loads(r["sources"])]
        assert r["chunk_id"] == min(ids)


def _small_group(tmp_path: Path) -> tuple[Artifacts, list]:
    rng = np.random.default_rng(5)
    b, o = unit(rng, DIMS), unit(rng, DIMS)
    v2 = near(rng, b, 0.99)
    items = [Item("v1.md", 0, f"licence v1 {FILLER}", b), Item("v2.md", 0, f"licence v2 {FILLER}", v2),
             Item("v2copy.md", 0, f"licence v2 {FILLER}", v2), Item("other.md", 0, "unrelated", o)]
    art = Artifacts(tmp_path)
    chunks = write_artifacts(art, items)
    return art, chunks


@pytest.mark.parametrize("policy", ["drop", "link", "keep_canonical"])
def test_policies(tmp_path: Path, policy: str) -> None:
    art, chunks = _small_group(tmp_path)
    by_src = {c.source: c for c in chunks}
    v1, v2 = by_src["v1.md"], by_src["v2.md"]
    v2_rep = min(v2.chunk_id, by_src["v2copy.md"].chunk_id)
    canon, dup = (v1.chunk_id, v2_rep) if v1.chunk_id < v2_rep else (v2_rep, v1.chunk_id)
    stats = run_dedupe(_cfg(policy=policy, threshold=0.95), art)
    rows = {r["chunk_id"]: r for r in _rows(art)}
    assert stats["exact_removed"] == 1 and stats["near_duplicates"] == 1 and stats["near_groups"] == 1
    rep = rows[canon]
    dups = json.loads(rep["duplicates"])
    assert [d["chunk_id"] for d in dups] == [dup] and dups[0]["similarity"] == pytest.approx(0.99, abs=1e-3)
    assert rep["is_duplicate"] is False and rep["canonical_id"] == canon
    kinds = {s["match"] for s in json.loads(rep["sources"])}
    if policy == "keep_canonical":
        assert set(rows) == {canon, dup, by_src["other.md"].chunk_id}
        assert rows[dup]["is_duplicate"] is True and rows[dup]["canonical_id"] == canon
        assert stats["near_removed"] == 0 and stats["points"] == 3
    else:
        assert set(rows) == {canon, by_src["other.md"].chunk_id}
        assert stats["near_removed"] == 1 and stats["points"] == 2
    if policy == "link":
        assert kinds == {"exact", "near"} and "source" in dups[0]
        near_sources = {s["source"] for s in json.loads(rep["sources"]) if s["match"] == "near"}
        assert near_sources in ({"v2.md", "v2copy.md"}, {"v1.md"})
    else:
        assert kinds == {"exact"} and "source" not in dups[0]


def test_report_artifact(tmp_path: Path) -> None:
    art = Artifacts(tmp_path)
    items, _ = _planted()
    write_artifacts(art, items)
    stats = run_dedupe(_cfg(), art)
    report = read_json(art.dedupe_report)
    assert report["near_groups"] == stats["near_groups"] == 40
    assert sum(report["near_sizes"].values()) == 40 and sum(report["exact_sizes"].values()) == 20
    assert 0 < len(report["examples"]) <= 20
    ex = report["examples"][0]
    assert ex["kind"] == "near" and ex["size"] == 5 and ex["example"].startswith("base text")
    assert all(m["text"] for m in ex["members"])
    assert report["ratio"] == pytest.approx(1 - stats["points"] / stats["input_rows"], abs=1e-5)


def test_fake_embedder_versioned_copies(tmp_path: Path) -> None:
    from embedline.tasks.config import EmbedParams
    from embedline.tasks.embed.providers.fake import FakeEmbedder

    texts = {
        "lic/a.txt": "Licensed under the Apache License, Version 2.0; you may not use this file except in "
        "compliance with the License. You may obtain a copy of the License at the project site.",
        "lic/b.txt": "Licensed under the Apache License, Version 2.1; you may not use this file except in "
        "compliance with the License. You may obtain a copy of the License at the project site.",
        "bread.txt": "Bread rises because yeast ferments sugars and releases carbon dioxide.",
        "tcp.txt": "TCP provides reliable, ordered delivery of a byte stream between applications.",
    }
    emb = FakeEmbedder(EmbedParams.model_validate({"provider": "fake"}))
    vecs = emb.embed(list(texts.values()))
    art = Artifacts(tmp_path)
    write_artifacts(art, [Item(s, 0, t, v) for (s, t), v in zip(texts.items(), vecs, strict=True)])
    stats = run_dedupe(_cfg(threshold=0.95, policy="drop"), art)
    assert stats["near_removed"] == 1 and stats["points"] == 3
    assert {r["source"] for r in _rows(art)} >= {"bread.txt", "tcp.txt"}


def test_lexical_pass_joins_word_level_copies(tmp_path: Path) -> None:
    """Vectors far apart (cos ~0) but texts nearly identical: only the lexical pass joins them."""
    rng = np.random.default_rng(9)
    base = "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun"
    items = [Item("a.txt", 0, base, unit(rng, DIMS)), Item("b.txt", 0, base + " today", unit(rng, DIMS)),
             Item("c.txt", 0, "completely different words about databases", unit(rng, DIMS))]
    art = Artifacts(tmp_path)
    write_artifacts(art, items)
    assert run_dedupe(_cfg(lexical=False), art)["near_duplicates"] == 0
    stats = run_dedupe(_cfg(lexical=True, lexical_threshold=0.8), art)
    assert stats["near_duplicates"] == 1 and stats["points"] == 2


def test_misaligned_vectors_fail_clearly(tmp_path: Path) -> None:
    art = Artifacts(tmp_path)
    rng = np.random.default_rng(0)
    write_artifacts(art, [Item("a", 0, "x", unit(rng, 8)), Item("b", 0, "y", unit(rng, 8))])
    write_vector_shard(art.vectors, 0, ["x1", "x2", "x3"], np.zeros((3, 8), np.float32), {})
    with pytest.raises(DedupeInputError, match="align"):
        run_dedupe(_cfg(), art)


def test_empty_input(tmp_path: Path) -> None:
    art = Artifacts(tmp_path)
    write_artifacts(art, [], dims=8)
    stats = run_dedupe(_cfg(), art)
    assert stats["points"] == 0 and stats["input_rows"] == 0
    assert shards.num_rows(art.deduped) == 0


def test_range_search_finds_all_pairs_in_a_dense_group() -> None:
    """A group of 40 near-identical vectors has 780 pairs: range search returns all (k=10 would not)."""
    rng = np.random.default_rng(2)
    base = unit(rng, DIMS)
    vecs = np.stack([near(rng, base, 0.995) for _ in range(40)] + [unit(rng, DIMS) for _ in range(200)])
    for method in ("exact", "ivf"):
        pairs, _info = range_pairs(vecs, 0.95, method=method, block=64, nprobe=4)
        found = {(int(a), int(b)) for i, j in pairs for a, b in zip(i, j, strict=True)}
        assert all(a < b for a, b in found)
        assert found == set(itertools.combinations(range(40), 2)), method


def test_components_compaction_matches_unbuffered() -> None:
    rng = np.random.default_rng(4)
    i = rng.integers(0, 500, 3000)
    j = rng.integers(0, 500, 3000)
    a, b = Components(500), Components(500, buffer_edges=50)
    for s in range(0, 3000, 100):
        a.add(i[s : s + 100], j[s : s + 100])
        b.add(i[s : s + 100], j[s : s + 100])
    assert np.array_equal(a.labels(), b.labels())


def test_lexical_groups() -> None:
    keys = ["k3", "k1", "k2", "k4"]
    base = "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun"
    texts = [base, base + " today", "completely different words about databases and indexes here", base]
    groups = lexical_groups(keys, texts, threshold=0.8)
    assert groups == {"k3": "k1", "k4": "k1"}


# ---- issue 15: dedupe never hides content --------------------------------------------------------
_API_BOILERPLATE = (
    "History: added in v0.11.15, changed in v10.0.0 to remove noAssert and stop coercing the offset "
    "to uint32. Parameters: offset, the number of bytes to skip before starting to read, which must "
    "satisfy 0 <= offset <= buf.length minus the size of the value. Returns: the value read."
)
_API = ["buf.readDoubleLE", "buf.readUInt16LE", "buf.readInt32BE", "buf.readFloatLE", "fs.unlink",
        "fs.lchown", "util.isNull", "util.isUndefined", "context.after", "context.afterEach"]


def _versions_and_api(seed: int = 11) -> tuple[list[Item], dict[str, int], dict[str, tuple[str, ...]]]:
    """Planted versioned copies (v1/v2/v3 of 12 pages: one changed word, same headings; must merge)
    and 10 distinct API entries sharing boilerplate with vectors at cosine 0.96-0.99 to each other
    (what MiniLM gives them; must not merge). Returns items, truth (source -> group), heading paths."""
    rng = np.random.default_rng(seed)
    items: list[Item] = []
    truth: dict[str, int] = {}
    heads: dict[str, tuple[str, ...]] = {}
    for g in range(12):
        b = unit(rng, DIMS)
        for v in range(3):
            src = f"docs/v{v + 1}/page{g}.md"
            text = f"Page {g} explains setting number {g} of the service. {FILLER} (release {v + 1})"
            items.append(Item(src, 0, text, b if v == 0 else near(rng, b, rng.uniform(0.97, 0.995))))
            truth[src], heads[src] = g, ("Guide", f"Setting {g}")
    shared = unit(rng, DIMS)
    for k, name in enumerate(_API):
        src = f"api/{name}.md"
        items.append(Item(src, 0, f"{name}(offset)\n\n{_API_BOILERPLATE}", near(rng, shared, rng.uniform(0.985, 0.995))))
        truth[src], heads[src] = 100 + k, ("Buffer", name)
    return items, truth, heads


def _write_with_headings(art: Artifacts, items: list[Item], heads: dict[str, tuple[str, ...]]) -> None:
    from dataclasses import replace

    from embedline.tasks.records import Chunk, write_records

    chunks = write_artifacts(art, items)
    write_records(art.chunks, Chunk, [replace(c, heading_path=heads[c.source]) for c in chunks])


@pytest.mark.parametrize("confirm", [True, False])
def test_versioned_copies_merge_but_api_entries_with_boilerplate_do_not(tmp_path: Path, confirm: bool) -> None:
    items, truth, heads = _versions_and_api()
    art = Artifacts(tmp_path)
    _write_with_headings(art, items, heads)
    stats = run_dedupe(_cfg(policy="keep_canonical", threshold=0.95, confirm_text=confirm), art)
    precision, recall, tp, errors = _pair_scores(_rows(art), truth)
    print(f"\n[confirm_text={confirm}] pair precision={precision:.3f} recall={recall:.3f} (tp={tp}, errors={errors})")
    if confirm:
        assert precision == 1.0 and recall == 1.0
        assert stats["near_groups"] == 12 and stats["pairs_rejected"] > 0
        assert read_json(art.dedupe_report)["pairs_rejected_by"].get("heading", 0) > 0
    else:  # vectors alone collapse the API entries into one another (the bug of issue 15)
        assert precision < 0.9


def test_linked_duplicates_keep_their_text(tmp_path: Path) -> None:
    items, _truth, heads = _versions_and_api()
    art = Artifacts(tmp_path)
    _write_with_headings(art, items, heads)
    run_dedupe(_cfg(policy="link", threshold=0.95), art)
    rows = _rows(art)
    stored = {r["source"] for r in rows}
    linked = {d["source"]: d["text"] for r in rows for d in json.loads(r["duplicates"])}
    texts = {it.source: it.text for it in items}
    assert set(texts) == stored | set(linked)  # every chunk is a point or linked to one
    assert all(linked[s] == texts[s] for s in linked) and len(linked) == 24
    assert all(f"api/{name}.md" in stored for name in _API)


def test_same_content_rules() -> None:
    from embedline.tasks.neardup import same_content, text_key

    a = text_key(f"buf.readDoubleLE(offset) {_API_BOILERPLATE}", ("Buffer", "buf.readDoubleLE"))
    b = text_key(f"buf.readUInt16LE(offset) {_API_BOILERPLATE}", ("Buffer", "buf.readUInt16LE"))
    assert same_content(a, b, 0.9) == "heading"
    a2 = text_key(f"buf.readDoubleLE(offset) {_API_BOILERPLATE}")
    b2 = text_key(f"buf.readUInt16LE(offset) {_API_BOILERPLATE}")
    assert same_content(a2, b2, 0.9) == "identifiers"
    v1 = text_key(f"Setting 3 {FILLER} (release 1)", ("Guide", "Setting 3"))
    v2 = text_key(f"Setting 3 {FILLER} (release 2)", ("Guide", "Setting 3"))
    assert same_content(v1, v2, 0.9) is None
    assert same_content(v1, text_key("Setting 3 is short", ("Guide", "Setting 3")), 0.9) == "text"
