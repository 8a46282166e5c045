"""A run costs what changed: the ledgers make preprocess and chunk re-process exactly the edited,
added, deleted and renamed documents, rewrite only their shards, and end in the same artifacts and
the same collection as a clean ingest of the final corpus (fake embedder, real embedded Qdrant)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from embedline.tasks import chunk as chunk_module
from embedline.tasks import ledger
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, load_config
from embedline.tasks.pipeline import INGEST_STAGES, run_stage
from embedline.tasks.records import sha256
from embedline.tasks.shards import shard_files, shard_name, shard_of
from embedline.tasks.vectorsets.stores import close_stores, open_store
from tests.conftest import FAKE, make_project

pytestmark = pytest.mark.integration

WORDS = ["river", "stone", "cloud", "engine", "garden", "violin", "harbor", "pepper", "quartz", "lantern", "meadow", "copper", "falcon"]


def _text(topic: str, n: int) -> str:
    out = []
    for i in range(n):
        k = (sum(map(ord, topic)) * 7 + i * 11) % len(WORDS)
        out.append(f"The {topic} note {i} mentions " + " ".join(WORDS[(k + j * j + i) % len(WORDS)] for j in range(8)) + ".")
    return " ".join(out)


CORPUS = {f"d{i // 4}/doc{i:02d}.txt": _text(f"topic{i}", 6) for i in range(24)}
CORPUS["d9/notes.md"] = "# Notes\n\n" + _text("notes", 10)
SETTINGS = {**FAKE, "chunk.max_tokens": 48, "chunk.overlap_tokens": 0, "run.shards": 8}


def _project(root: Path, docs: dict[str, str], **overrides: Any) -> tuple[Config, Artifacts]:
    make_project(root, {**SETTINGS, **overrides}, docs=docs)
    return load_config(root / "params.yaml"), Artifacts(root)


def _ingest(cfg: Config, art: Artifacts) -> dict[str, dict[str, Any]]:
    return {name: run_stage(name, cfg, art) for name in INGEST_STAGES}


def _bytes(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in shard_files(folder)}


def _mtimes(folder: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in shard_files(folder)}


def _state(cfg: Config, art: Artifacts) -> dict[str, str]:
    store = open_store(cfg.qdrant, art.root)
    return {p.id: (p.payload or {})["payload_hash"] for p in store.scan(cfg.qdrant.collection, with_payload=["payload_hash"])}


@pytest.fixture(autouse=True)
def _close_stores() -> Any:
    yield
    close_stores()


def _doc_id(rel: str) -> str:
    return sha256(rel)[:32]


def test_edit_add_delete_rename_reprocess_exactly_those_documents(tmp_path: Path) -> None:
    cfg, art = _project(tmp_path / "p", CORPUS)
    first = _ingest(cfg, art)
    n = len(CORPUS)
    assert first["preprocess"]["files_loaded"] == n and first["chunk"]["documents_chunked"] == n
    assert len(shard_files(art.documents)) > 1

    # unchanged re-run: nothing hashed, loaded, chunked or rewritten
    docs_mtimes, chunk_mtimes = _mtimes(art.documents), _mtimes(art.chunks)
    vec_mtimes, dedup_mtimes = _mtimes(art.vectors), _mtimes(art.deduped)
    assert set(vec_mtimes) == set(chunk_mtimes) and set(dedup_mtimes) <= set(chunk_mtimes)
    again = _ingest(cfg, art)
    assert again["preprocess"]["files_hashed"] == again["preprocess"]["files_loaded"] == 0
    assert again["preprocess"]["files_unchanged"] == n and again["preprocess"]["shards_written"] == 0
    assert again["chunk"]["documents_chunked"] == 0 and again["chunk"]["shards_written"] == 0
    assert _mtimes(art.documents) == docs_mtimes and _mtimes(art.chunks) == chunk_mtimes
    assert again["embed"]["vector_shards_written"] == again["dedupe"]["deduped_shards_written"] == 0
    assert _mtimes(art.vectors) == vec_mtimes and _mtimes(art.deduped) == dedup_mtimes
    assert (again["upsert"]["added"], again["upsert"]["updated"], again["upsert"]["deleted"]) == (0, 0, 0)

    # touched but not changed: hashed, not loaded
    raw = art.root / "data" / "raw"
    os.utime(raw / "d0/doc00.txt", ns=(1, 1))
    touched = run_stage("preprocess", cfg, art)
    assert (touched["files_hashed"], touched["files_loaded"], touched["shards_written"]) == (1, 0, 0)

    # edit one, add one, delete one, rename one
    chunk_ids_before = ledger.read_docs(art.chunk_ledger)
    (raw / "d1/doc04.txt").write_text(_text("edited", 3))
    (raw / "d7").mkdir()
    (raw / "d7/new.txt").write_text(_text("added", 4))
    (raw / "d2/doc08.txt").unlink()
    os.rename(raw / "d3/doc12.txt", raw / "d3/renamed.txt")
    changed = {"d1/doc04.txt", "d7/new.txt", "d3/renamed.txt"}
    gone = {"d2/doc08.txt", "d3/doc12.txt"}
    run = _ingest(cfg, art)
    pre, ch = run["preprocess"], run["chunk"]
    assert (pre["files_new"], pre["files_changed"], pre["files_deleted"]) == (2, 1, 2)
    assert pre["files_loaded"] == pre["documents_loaded"] == 3 and pre["files_hashed"] == 3
    touched_shards = {shard_of(_doc_id(r), cfg.run.shards) for r in changed | gone}
    # (a shard whose only document went away is removed: the chunk stage counts it as removed)
    assert pre["shards_written"] == len(touched_shards) == ch["shards_written"] + ch["shards_removed"]
    assert ch["documents_chunked"] == 3 and ch["documents_deleted"] == 2
    assert ch["documents_reused"] == n - 1 - 2
    # the ledgers: exactly the final files; unchanged documents keep their chunk ids
    files = ledger.read_files(art.ledger)
    assert set(files) == (set(CORPUS) - gone) | {"d7/new.txt", "d3/renamed.txt"}
    docs = ledger.read_docs(art.chunk_ledger)
    assert set(docs) == {_doc_id(r) for r in files}
    for rel in set(files) - changed:
        assert docs[_doc_id(rel)] == chunk_ids_before[_doc_id(rel)]
    assert docs[_doc_id("d1/doc04.txt")] != chunk_ids_before[_doc_id("d1/doc04.txt")]
    # shards nobody touched kept their bytes (and mtimes)
    untouched = {shard_name(i) for i in range(cfg.run.shards)} - {shard_name(i) for i in touched_shards}
    assert {k: v for k, v in _mtimes(art.documents).items() if k in untouched} == {
        k: v for k, v in docs_mtimes.items() if k in untouched}
    assert run["upsert"]["added"] > 0 and run["upsert"]["deleted"] > 0
    # the vector and deduped shards of untouched shards were not rewritten either
    assert run["embed"]["vector_shards_written"] == ch["shards_written"]
    for folder, before in ((art.vectors, vec_mtimes), (art.deduped, dedup_mtimes)):
        after = _mtimes(folder)
        assert {k: v for k, v in after.items() if k in untouched} == {k: v for k, v in before.items() if k in untouched}
        assert {k for k in after.keys() | before.keys() if after.get(k) != before.get(k)} <= {
            shard_name(i) for i in touched_shards}

    # the final state equals a clean ingest of the final corpus
    final = {rel: (raw / rel).read_text() for rel in files}
    cfg2, art2 = _project(tmp_path / "clean", final)
    _ingest(cfg2, art2)
    assert _bytes(art.documents) == _bytes(art2.documents)
    assert _bytes(art.chunks) == _bytes(art2.chunks)
    assert _bytes(art.vectors) == _bytes(art2.vectors) and _bytes(art.vectors)
    assert _bytes(art.deduped) == _bytes(art2.deduped) and _bytes(art.deduped)
    assert art.rejected.read_bytes() == art2.rejected.read_bytes()
    assert _state(cfg, art) == _state(cfg2, art2)


def test_chunk_param_change_rechunks_all_and_full_flag_rebuilds(tmp_path: Path) -> None:
    cfg, art = _project(tmp_path / "p", CORPUS)
    run_stage("preprocess", cfg, art)
    first = run_stage("chunk", cfg, art)
    n = len(CORPUS)
    # nothing to chunk: the tokenizer is not even loaded, the budget comes from the ledger
    chunk_module._BUDGETS.clear()
    again = run_stage("chunk", cfg, art)
    assert not chunk_module._BUDGETS and again["token_budget"] == first["token_budget"] > 0
    cfg2 = load_config(art.root / "params.yaml", ["chunk.max_tokens=64"])
    pre = run_stage("preprocess", cfg2, art)
    assert pre["files_loaded"] == 0  # a chunk param does not touch preprocess
    ch = run_stage("chunk", cfg2, art)
    assert ch["documents_chunked"] == n and ch["documents_reused"] == 0
    # a preprocess param re-loads everything
    cfg3 = load_config(art.root / "params.yaml", ["chunk.max_tokens=64", "preprocess.dehyphenate=false"])
    assert run_stage("preprocess", cfg3, art)["files_loaded"] == n
    # --full: everything again, same bytes
    before = _bytes(art.chunks)
    full = load_config(art.root / "params.yaml", ["chunk.max_tokens=64", "preprocess.dehyphenate=false",
                                                  "run.full_rebuild=true"])
    assert run_stage("preprocess", full, art)["files_loaded"] == n
    assert run_stage("chunk", full, art)["documents_chunked"] == n
    assert _bytes(art.chunks) == before


def test_shard_count_change_and_damaged_outputs_rebuild(tmp_path: Path) -> None:
    cfg, art = _project(tmp_path / "p", CORPUS)
    run_stage("preprocess", cfg, art)
    run_stage("chunk", cfg, art)
    # a deleted shard file makes the ledger untrustworthy: everything is rebuilt, not half-reused
    victim = shard_files(art.documents)[0]
    victim.unlink()
    assert run_stage("preprocess", cfg, art)["files_loaded"] == len(CORPUS)
    assert victim.exists()
    shutil.rmtree(art.chunks)
    assert run_stage("chunk", cfg, art)["documents_chunked"] == len(CORPUS)
    cfg4 = load_config(art.root / "params.yaml", ["run.shards=3"])
    pre = run_stage("preprocess", cfg4, art)
    assert pre["files_loaded"] == len(CORPUS) and len(shard_files(art.documents)) == 3
    run_stage("chunk", cfg4, art)
    assert {f.name for f in shard_files(art.chunks)} == {shard_name(i) for i in range(3)}


def test_unchanged_embed_reads_no_chunk_texts_and_loads_no_embedder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embed stage compares each chunk shard's digest with the one its vector shard records:
    with nothing changed it plans no row ranges, never opens the cache, reads no chunk text and
    never asks for the embedder; after a one-document edit it reads that document's shard only."""
    from embedline.tasks.embed import rows as rows_module
    from embedline.tasks.embed import stage as embed_stage

    cfg, art = _project(tmp_path / "p", CORPUS)
    for name in ("preprocess", "chunk", "embed"):
        first = run_stage(name, cfg, art)
    assert first["chunk_shards_read"] == len(shard_files(art.chunks)) > 1 and first["texts_embedded"] > 0
    vec_bytes = _bytes(art.vectors)

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("an unchanged embed must not touch this")

    with monkeypatch.context() as m:
        m.setattr(embed_stage, "get_embedder", refuse)
        m.setattr(embed_stage, "EmbeddingCache", refuse)
        m.setattr(rows_module.ChunkRows, "read", refuse)
        again = run_stage("embed", cfg, art)
    assert (again["chunk_shards_read"], again["shards"], again["texts_embedded"]) == (0, 0, 0)
    assert again["vector_shards_written"] == 0 and again["vector_shards_kept"] == len(vec_bytes)
    assert _bytes(art.vectors) == vec_bytes

    raw = art.root / "data" / "raw"
    (raw / "d1/doc04.txt").write_text(_text("edited", 3))
    run_stage("preprocess", cfg, art)
    run_stage("chunk", cfg, art)
    read: list[int] = []
    real_read = rows_module.ChunkRows.read

    def spy(self: Any, start: int, stop: int, columns: list[str]) -> Any:
        read.append(len(self.files))
        return real_read(self, start, stop, columns)

    with monkeypatch.context() as m:
        m.setattr(rows_module.ChunkRows, "read", spy)
        edited = run_stage("embed", cfg, art)
    assert edited["chunk_shards_read"] == 1 and set(read) == {1}
    assert edited["vector_shards_written"] == 1 and edited["texts_embedded"] > 0
    changed = {k for k, v in _bytes(art.vectors).items() if vec_bytes.get(k) != v}
    assert changed == {shard_name(shard_of(_doc_id("d1/doc04.txt"), cfg.run.shards))}


def test_a_rebuilt_vector_shard_keeps_the_vectors_of_its_unchanged_texts(tmp_path: Path) -> None:
    """After a one-document edit the rebuilt vector shard takes the vectors of its unchanged texts
    from its previous version, not from the cache or the model: with the cache deleted, only the
    edited document's new texts are embedded, and the shards equal a clean build's."""
    import pyarrow.parquet as pq

    from embedline.tasks.embed.stage import cache_path
    from embedline.tasks.vector_shards import reusable_hashes

    cfg, art = _project(tmp_path / "p", CORPUS)
    for name in ("preprocess", "chunk", "embed"):
        run_stage(name, cfg, art)
    edited_doc = "d3/doc13.txt"  # its shard holds eight other documents
    (art.root / "data" / "raw" / edited_doc).write_text(_text("edited", 3))
    run_stage("preprocess", cfg, art)
    run_stage("chunk", cfg, art)
    index = shard_of(_doc_id(edited_doc), cfg.run.shards)
    rows = pq.read_table(art.chunks / shard_name(index), columns=["doc_id", "text_hash"]).to_pylist()
    assert reusable_hashes(art.vectors / shard_name(index), "") is None  # another namespace: nothing to keep
    new_texts = {r["text_hash"] for r in rows} - {
        h for f in shard_files(art.vectors) for h in pq.read_table(f, columns=["text_hash"]).column(0).to_pylist()}
    assert new_texts and all(r["doc_id"] == _doc_id(edited_doc) for r in rows if r["text_hash"] in new_texts)
    assert len({r["text_hash"] for r in rows}) > 2 * len(new_texts)
    for f in cache_path(cfg, art).parent.glob(cache_path(cfg, art).name + "*"):
        f.unlink()

    edited = run_stage("embed", cfg, art)
    assert edited["vector_shards_written"] == 1
    assert edited["texts_embedded"] == len(new_texts)

    clean_cfg, clean = _project(tmp_path / "clean", {**CORPUS, edited_doc: _text("edited", 3)})
    for name in ("preprocess", "chunk", "embed"):
        run_stage(name, clean_cfg, clean)
    assert _bytes(art.vectors) == _bytes(clean.vectors)
