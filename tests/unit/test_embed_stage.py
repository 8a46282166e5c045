"""The embed stage on the fake provider: alignment, dedupe, cache, resume, shards, manifest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, EmbedParams, load_config
from embedline.tasks.embed import (
    PROVIDERS,
    EmbedError,
    EmbedInputError,
    clear_embedders,
    embed_query,
    embed_shard,
    finalize_embed,
    fingerprint_for,
    get_embedder,
    plan_embed,
    plan_shards,
    run_embed,
)
from embedline.tasks.embed.cache import EmbeddingCache
from embedline.tasks.embed.protocol import Capability
from embedline.tasks.embed.providers.fake import SPEC as FAKE_SPEC
from embedline.tasks.embed.providers.fake import FakeEmbedder
from embedline.tasks.embed.stage import cache_path
from embedline.tasks.vector_shards import read_all
from tests.chunkdata import folder_bytes
from tests.fakes.chunks import SAMPLE_TEXTS, write_chunks

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    clear_embedders()
    yield
    clear_embedders()


def setup(tmp_path: Path, texts: list[str] = SAMPLE_TEXTS, **embed: Any) -> tuple[Config, Artifacts]:
    art = Artifacts(tmp_path)
    write_chunks(art.chunks, texts)
    settings: dict[str, Any] = {"provider": "fake", "shard_rows": 4, "batch_size": 1,
                                "cache_path": str(tmp_path / "cache" / "emb.sqlite")}
    settings.update(embed)
    return load_config(None, {"embed": settings}), art


def test_vectors_aligned_with_chunks_and_duplicates_embedded_once(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path)
    stats = run_embed(cfg, art)
    vectors = read_all(art.vectors)
    ref = FakeEmbedder(cfg.embed).embed(SAMPLE_TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(SAMPLE_TEXTS), 256)
    np.testing.assert_array_equal(vectors, ref)
    unique = len(set(SAMPLE_TEXTS))
    emb = get_embedder(cfg.embed)
    assert isinstance(emb, FakeEmbedder) and emb.texts_seen == unique
    assert stats["rows"] == len(SAMPLE_TEXTS)
    assert (stats["unique_texts"], stats["cache_misses"], stats["texts_embedded"]) == (unique, unique, unique)
    assert all(not isinstance(v, (dict, list)) for v in stats.values())  # flat, JSON-able
    json.dumps(stats)


def test_manifest(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path, passage_prompt="passage: ", query_prompt="query: ")
    run_embed(cfg, art)
    m = json.loads(art.manifest.read_text())
    for key in ("provider", "model", "model_path", "revision", "backend", "precision", "dims", "prompts",
                "normalize", "libraries", "params_hash", "corpus_checksum", "fingerprint", "rows",
                "unique_texts"):
        assert key in m, key
    # a DVC output: byte-stable, so no run facts (they are the stage's stats, a metrics file)
    for key in ("cache_hits", "cache_misses", "texts_embedded", "seconds", "texts_per_second", "embedder"):
        assert key not in m, key
    before = art.manifest.read_bytes()
    again = run_embed(cfg, art)  # everything from the cache now: other stats, the same manifest
    assert again["cache_hits"] > 0 and art.manifest.read_bytes() == before
    assert m["prompts"] == {"passage": "passage: ", "query": "query: "}
    assert m["fingerprint"] == fingerprint_for(cfg) == cfg.fingerprint(model_revision=m["revision"])
    assert m["shape"] == [len(SAMPLE_TEXTS), 256] and m["dims"] == 256
    assert set(m["libraries"]) >= {"numpy", "torch", "sentence-transformers", "openai"}
    # the corpus checksum follows the ordered chunk texts, the fingerprint does not
    cfg2, art2 = setup(tmp_path / "b", texts=list(reversed(SAMPLE_TEXTS)), passage_prompt="passage: ",
                       query_prompt="query: ")
    run_embed(cfg2, art2)
    m2 = json.loads(art2.manifest.read_text())
    assert m2["corpus_checksum"] != m["corpus_checksum"] and m2["fingerprint"] == m["fingerprint"]


def test_prompt_changes_vectors_and_fingerprint(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path)
    run_embed(cfg, art)
    plain = read_all(art.vectors)
    cfg_p, art_p = setup(tmp_path / "p", passage_prompt="passage: ")
    run_embed(cfg_p, art_p)
    assert not np.array_equal(plain, read_all(art_p.vectors))
    assert fingerprint_for(cfg) != fingerprint_for(cfg_p)


def test_rerun_hits_cache_and_is_byte_identical(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path)
    run_embed(cfg, art)
    first = folder_bytes(art.vectors)
    again = run_embed(cfg, art)
    assert again["texts_embedded"] == 0 and again["cache_hits"] == again["unique_texts"]
    assert folder_bytes(art.vectors) == first


def test_crash_mid_embed_resumes_without_paying_again(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path)
    calls: list[int] = []

    class Flaky(FakeEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            calls.append(len(texts))
            if len(calls) == 3:
                raise KeyboardInterrupt  # like Ctrl-C in the middle of a run
            return super().embed(texts)

    with PROVIDERS.registered("fake", replace(FAKE_SPEC, factory=Flaky)), pytest.raises(KeyboardInterrupt):
        run_embed(cfg, art)
    committed = sum(calls[:2])
    clear_embedders()
    stats = run_embed(cfg, art)
    unique = len(set(SAMPLE_TEXTS))
    assert stats["texts_embedded"] == unique - committed
    assert stats["cache_hits"] == committed


def test_parallel_shards_embed_each_text_once_and_match_sequential(tmp_path: Path) -> None:
    texts = [f"text {i % 13} about subject {i % 5}" for i in range(40)]
    cfg, art = setup(tmp_path, texts=texts)
    shards = plan_shards(cfg, art)
    assert [(s.row_start, s.row_stop) for s in shards][:2] == [(0, 4), (4, 8)] and shards[-1].row_stop == 40
    with ThreadPoolExecutor(4) as pool:
        stats = list(pool.map(lambda s: embed_shard(cfg, art, s), shards))
    assert sum(s["texts_embedded"] for s in stats) == len(set(texts))
    out = finalize_embed(cfg, art, stats)
    assert out["texts_embedded"] == len(set(texts)) and out["rows"] == 40
    parallel = folder_bytes(art.vectors)
    cfg2, art2 = setup(tmp_path / "seq", texts=texts)
    run_embed(cfg2, art2)
    assert folder_bytes(art2.vectors) == parallel


def test_finalize_without_embedding_names_a_missing_chunk(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path)
    embed_shard(cfg, art, plan_shards(cfg, art)[0])
    with pytest.raises(EmbedError, match=r"no cached vector.*doc\d\.txt"):
        finalize_embed(cfg, art)
    assert not list(art.vectors.glob('shard-*'))


def test_empty_embed_text_is_reported_with_source(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path, texts=["fine text", "   ", "more"])
    with pytest.raises(EmbedInputError, match=r"doc0\.txt: chunk .* empty embed_text"):
        run_embed(cfg, art)


def test_cache_disabled_uses_a_run_cache_that_is_removed(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path, cache=False)
    run_embed(cfg, art)
    run_file = cache_path(cfg, art)
    assert run_file.name.startswith("run-") and not run_file.exists()
    assert not art.resolve(cfg.embed.cache_path).exists()
    # the vector shards record their chunk shards: an unchanged re-run has nothing to embed
    assert run_embed(cfg, art)["texts_embedded"] == 0
    # a forced rebuild embeds everything again: no cache survived the first run
    full = cfg.model_copy(update={"run": cfg.run.model_copy(update={"full_rebuild": True})})
    assert run_embed(full, art)["texts_embedded"] == len(set(SAMPLE_TEXTS))


def test_progress_callback(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path)
    seen: list[tuple[int, int]] = []
    run_embed(cfg, art, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (len(SAMPLE_TEXTS), len(SAMPLE_TEXTS))
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and {t for _, t in seen} == {len(SAMPLE_TEXTS)}


def test_plan_embed_counts_what_is_left(tmp_path: Path) -> None:
    cfg, art = setup(tmp_path)
    before = plan_embed(cfg, art)
    assert before["texts_to_embed"] == before["unique_texts"] == len(set(SAMPLE_TEXTS))
    assert before["tokens_to_embed"] > 0
    run_embed(cfg, art)
    assert plan_embed(cfg, art)["texts_to_embed"] == 0
    with EmbeddingCache(cache_path(cfg, art)) as cache:
        assert cache.count() == len(set(SAMPLE_TEXTS))


def test_embed_query_applies_the_query_prompt() -> None:
    params = EmbedParams.model_validate({"provider": "fake", "query_prompt": "query: "})
    q = embed_query(params, "photosynthesis in plants")
    assert q.shape == (256,) and q.dtype == np.float32
    np.testing.assert_array_equal(q, FakeEmbedder(params).embed(["query: photosynthesis in plants"])[0])
    assert not np.array_equal(q, embed_query(EmbedParams.model_validate({"provider": "fake"}), "photosynthesis in plants"))
    with pytest.raises(EmbedInputError):
        embed_query(params, "  ")


def test_local_models_commit_every_batch(tmp_path: Path) -> None:
    """issue 14 row 15: a kill loses at most one batch (it was batch_size x 8 texts)."""
    texts = [f"distinct text number {i} with {'words ' * (i % 5)}" for i in range(20)]
    cfg, art = setup(tmp_path, texts=texts, batch_size=4, shard_rows=100)
    calls: list[int] = []

    class Killed(FakeEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            calls.append(len(texts))
            if len(calls) == 3:
                raise KeyboardInterrupt
            return super().embed(texts)

    with PROVIDERS.registered("fake", replace(FAKE_SPEC, factory=Killed)), pytest.raises(KeyboardInterrupt):
        run_embed(cfg, art)
    assert calls == [4, 4, 4]  # one model batch per call
    with EmbeddingCache(cache_path(cfg, art)) as cache:
        assert cache.count() == 8  # the two finished batches are committed


def test_a_failed_group_does_not_discard_other_in_flight_results(tmp_path: Path) -> None:
    """issue 14 row 3: when one request fails, the requests in flight that succeed are cached."""
    import threading

    texts = [f"independent text {i}" for i in range(6)]
    cfg, art = setup(tmp_path, texts=texts, batch_size=2, shard_rows=100, concurrency=3)
    failed = threading.Event()
    all_in_flight = threading.Barrier(3, timeout=30)
    paid: list[str] = []
    lock = threading.Lock()

    class OneFails(FakeEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            all_in_flight.wait()  # the three requests are all sent before one of them fails
            if texts[0].endswith(" 0") or texts[-1].endswith(" 0"):
                failed.set()
                raise EmbedError("this request failed for good")
            assert failed.wait(10)  # still in flight when the other one fails
            with lock:
                paid.extend(texts)
            return super().embed(texts)

    spec = replace(FAKE_SPEC, factory=OneFails, capabilities=FAKE_SPEC.capabilities | {Capability.CONCURRENT})
    with PROVIDERS.registered("fake", spec), pytest.raises(EmbedError, match="for good"):
        run_embed(cfg, art)
    assert len(paid) == 4
    with EmbeddingCache(cache_path(cfg, art)) as cache:
        assert cache.count() == len(paid)  # every paid-for vector was committed
