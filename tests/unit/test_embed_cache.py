"""The content-addressed embedding cache."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed.cache import EmbeddingCache, namespace_for

pytestmark = pytest.mark.unit


def vec(i: int, dims: int = 8) -> np.ndarray:
    return np.arange(dims, dtype=np.float32) + i


def test_hits_misses_and_roundtrip(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        cache.put_many("ns", [("a", vec(1)), ("b", vec(2))])
        got = cache.get_many("ns", ["a", "b", "c", "a"])
        assert set(got) == {"a", "b"}
        np.testing.assert_array_equal(got["a"], vec(1))
        assert got["b"].dtype == np.float32
        assert (cache.hits, cache.misses) == (2, 1)  # duplicates in the query count once
        assert cache.missing("ns", ["a", "c", "d"]) == ["c", "d"]
        assert cache.dims("ns") == 8 and cache.dims("other") is None
        assert cache.count("other") == 0


def test_wal_mode_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path) as cache:
        cache.put_many("ns", [("a", vec(1))])
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with EmbeddingCache(path) as cache:
        assert cache.count("ns") == 1


def test_first_writer_wins(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        cache.put_many("ns", [("a", vec(1))])
        cache.put_many("ns", [("a", vec(9))])
        np.testing.assert_array_equal(cache.get_many("ns", ["a"])["a"], vec(1))


def test_namespace_changes_with_everything_that_changes_a_vector() -> None:
    base = EmbedParams.model_validate({})
    ns = namespace_for(base, "rev1")
    assert namespace_for(base, "rev2") != ns
    for change in [{"model": "x"}, {"backend": "onnx"}, {"precision": "int8"}, {"passage_prompt": "passage: "},
                   {"dimensions": 64}, {"normalize": False}, {"provider": "fake"}]:
        assert namespace_for(EmbedParams.model_validate(change), "rev1") != ns, change
    # things that do not change a vector do not split the cache
    for same in [{"batch_size": 8}, {"query_prompt": "query: "}, {"cache_path": "elsewhere.sqlite"}]:
        assert namespace_for(EmbedParams.model_validate(same), "rev1") == ns, same


def _writer(path: str, worker: int, n: int) -> None:
    with EmbeddingCache(path, busy_timeout_ms=30_000) as cache:
        for start in range(0, n, 10):  # many short transactions, overlapping keys across workers
            cache.put_many("ns", [(f"k{i}", vec(i)) for i in range(start, start + 10)])
            cache.get_many("ns", [f"k{worker}"])


def test_concurrent_writer_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite")
    EmbeddingCache(path).close()
    ctx = mp.get_context("spawn")  # fork would inherit locks and threads of the test process
    procs = [ctx.Process(target=_writer, args=(path, w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with EmbeddingCache(path) as cache:
        assert cache.count("ns") == 200
        got = cache.get_many("ns", [f"k{i}" for i in range(200)])
        assert all(np.array_equal(got[f"k{i}"], vec(i)) for i in range(200))


def test_concurrent_writer_threads_share_one_cache(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            for i in range(50):
                cache.put_many("ns", [(f"t{w}-{i}", vec(i))])
        except BaseException as exc:  # noqa: BLE001 a writer thread's failure of any kind is collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.count("ns") == 200 and cache.writes == 200
    cache.close()


def test_vectors_from_the_exported_graph_get_their_own_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluation texts embedded through the exported graph (no torch) are cached, but never read
    back as the model's own vectors: the embed stage's namespace stays bit-stable."""
    from embedline.tasks.embed import cached, query
    from embedline.tasks.embed.registry import clear_embedders

    clear_embedders()
    params = EmbedParams.model_validate({"provider": "fake"})
    seen: list[str] = []

    class Graph:
        def encode(self, texts: list[str]) -> np.ndarray:
            seen.extend(texts)
            return np.ones((len(texts), 256), dtype=np.float32)  # the fake model's size

    monkeypatch.setattr(query, "light_encoder", lambda p, bulk=False: Graph())
    path = tmp_path / "cache.sqlite"
    first = cached.embed_cached(params, ["alpha", "beta"], "", path)
    assert seen == ["alpha", "beta"]
    again = cached.embed_cached(params, ["beta", "alpha"], "", path)
    assert seen == ["alpha", "beta"] and np.array_equal(again, first[::-1])  # from the cache

    monkeypatch.setattr(query, "light_encoder", lambda p, bulk=False: None)
    model = cached.embed_cached(params, ["alpha", "beta"], "", path)  # the model's own namespace
    assert not np.allclose(model, first)


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def test_a_vector_costs_about_its_own_bytes_on_disk(tmp_path: Path) -> None:
    """384-d float32 rows (1,536 bytes) stay inline in the table: the old WITHOUT ROWID layout put
    each on its own overflow page (~4 KiB on disk per vector, 4.5 GB by 1 M vectors)."""
    path = tmp_path / "c.sqlite"
    n, dims = 3000, 384
    rng = np.random.default_rng(0)
    with EmbeddingCache(path) as cache:
        for start in range(0, n, 500):
            cache.put_many("ns", [(f"{i:064x}", rng.standard_normal(dims)) for i in range(start, start + 500)])
        conn = cache._conn()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = n * dims * 4
    assert _file_bytes(path) < 1.5 * raw, (_file_bytes(path), raw)


def test_a_cache_in_the_old_layout_is_migrated_with_its_vectors(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE vectors (ns TEXT NOT NULL, text_hash TEXT NOT NULL, dims INTEGER NOT NULL,"
        " vec BLOB NOT NULL, PRIMARY KEY (ns, text_hash)) WITHOUT ROWID;"
        "CREATE TABLE namespaces (ns TEXT PRIMARY KEY, spec TEXT NOT NULL);"
    )
    vecs = {f"h{i}": np.full(8, i, dtype=np.float32) for i in range(50)}
    conn.executemany("INSERT INTO vectors VALUES ('ns', ?, 8, ?)", [(h, v.tobytes()) for h, v in vecs.items()])
    conn.commit()
    conn.close()
    with EmbeddingCache(path) as cache:
        got = cache.get_many("ns", list(vecs))
        assert cache.put_many("ns", [("h0", np.zeros(8)), ("new", np.ones(8))]) == 2
        assert cache.count("ns") == 51  # h0 kept its first vector (first writer wins), "new" added
        assert np.array_equal(cache.get_many("ns", ["h0"])["h0"], vecs["h0"])
    assert {h: v.tolist() for h, v in got.items()} == {h: v.tolist() for h, v in vecs.items()}
    sql = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master WHERE name = 'vectors'").fetchone()[0]
    assert "WITHOUT ROWID" not in sql.upper()


def test_a_locked_cache_is_retried_and_other_errors_are_not() -> None:
    import sqlite3

    from embedline.tasks.embed.cache import _when_unlocked

    calls: list[int] = []

    def locked_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "done"

    assert _when_unlocked(locked_twice, 5_000) == "done" and len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: vectors")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        _when_unlocked(broken, 5_000)
    assert len(calls) == 1  # not retried


def test_cached_texts_are_embedded_in_the_groups_the_provider_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole documents and queries go to the embedder in the calls the embed stage would make
    (OpenVINO and ONNX per-text plan several batches per call: each call ends on a barrier), one
    cache commit per call; cached texts are not planned again."""
    from embedline.tasks.embed import cached, query, registry
    from embedline.tasks.embed.registry import clear_embedders, get_embedder

    clear_embedders()
    monkeypatch.setattr(query, "light_encoder", lambda p, bulk=False: None)
    params = EmbedParams.model_validate({"provider": "fake", "batch_size": 2})
    planned: list[list[str]] = []

    def plan(emb: object, p: EmbedParams, texts: list[str], default: int) -> list[list[int]]:
        planned.append(list(texts))  # as the provider sees them: prompted
        return [g for g in (list(range(len(texts) - 1)), [len(texts) - 1]) if g]  # all but one, then the last

    monkeypatch.setattr(registry, "request_groups", plan)
    path = tmp_path / "cache.sqlite"
    vecs = cached.embed_cached(params, ["a b", "c d", "e f", "g h"], "", path)
    assert planned == [["a b", "c d", "e f", "g h"]]
    assert get_embedder(params).calls == 2  # the plan's two groups, not batch_size's
    cached.embed_cached(params, ["e f", "x y"], "", path)
    assert planned[-1] == ["x y"] and get_embedder(params).calls == 3  # only the new text
    cached.embed_cached(params, ["q r"], "query: ", path)
    assert planned[-1] == ["query: q r"]  # planned as sent (token-packed API requests count the prompt)
    with EmbeddingCache(path) as cache:
        assert cache.count(namespace_for(params, registry.revision_for(params), "")) == 5
    assert vecs.shape == (4, get_embedder(params).dims)


@pytest.mark.parametrize(
    ("texts", "batch_size", "requests", "expected"),
    [
        (256, 32, 2, 16),  # a full call: each request takes a half batch
        (54, 32, 2, 7),  # a short call: ~4 sub-batches per request, not 2 of 16 and a long tail
        (3, 32, 2, 1),
        (0, 32, 2, 1),
        (100, 8, 1, 8),  # never more than the batch
    ],
)
def test_openvino_sub_batches_shrink_for_short_calls(texts: int, batch_size: int, requests: int,
                                                     expected: int) -> None:
    from embedline.tasks.embed.providers.onnx_backend import sub_batch

    assert sub_batch(texts, batch_size, requests) == expected


def test_openvino_vectors_are_keyed_by_their_padding_rule() -> None:
    """OpenVINO batches pad each text to a width of its own; vectors made under another padding
    rule (an older cache) must not be read back as these."""
    from embedline.tasks.config import OPENVINO_PADDING as PADDING
    from embedline.tasks.embed.cache import namespace_spec
    from embedline.tasks.embed.providers.onnx_backend import PAD_MULTIPLE

    st = {"provider": "sentence-transformers"}
    ov = EmbedParams.model_validate({**st, "backend": "openvino"})
    onnx = EmbedParams.model_validate({**st, "backend": "onnx"})
    assert namespace_spec(ov, "r")["padding"] == PADDING and PADDING.endswith(f"-{PAD_MULTIPLE}")
    # ONNX Runtime on the CPU runs one text per call (no padding); its padded batches (CUDA, or a
    # model folder without tokenizer.json) are not bit-stable across devices anyway
    assert "padding" not in namespace_spec(onnx, "r")


@pytest.mark.parametrize(("length", "window", "width"), [(1, 256, 16), (16, 256, 16), (17, 256, 32),
                                                          (250, 256, 256), (256, 256, 256), (505, 510, 510),
                                                          (40, None, 48)])
def test_a_text_is_always_padded_to_a_width_of_its_own(length: int, window: int | None, width: int) -> None:
    from embedline.tasks.embed.providers.onnx_backend import padded_width

    assert padded_width(length, window) == width


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_whatever_keys_a_cached_vector_also_names_its_vector_set(backend: str) -> None:
    """A cache namespace change makes the embed stage compute vectors again; if the fingerprint did
    not change with it, the upsert (which diffs payloads within one vector set) would keep the old
    vectors in Qdrant and the read-back check before the alias swap would fail. So every key of
    the namespace (but the model revision and prompt, which the fingerprint holds under other
    names) is part of the fingerprint's embed params, with the same value."""
    from embedline.tasks.config import load_config
    from embedline.tasks.embed.cache import namespace_spec

    cfg = load_config(None, ["embed.provider=sentence-transformers", f"embed.backend={backend}"])
    spec = namespace_spec(cfg.embed, "rev")
    vector = cfg.vector_params()["embed"]
    for key, value in spec.items():
        if key not in ("revision", "prompt"):
            assert vector.get(key, "<missing>") == value, key
    assert spec["prompt"] == vector["passage_prompt"]


def test_a_failed_call_keeps_the_vectors_of_its_requests_that_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API call split into several requests fails after the first was answered (and billed):
    that vector is in the cache, so the retry embeds only the rest."""
    from embedline.tasks.embed import cached, query
    from embedline.tasks.embed.protocol import EmbedError
    from embedline.tasks.embed.registry import clear_embedders

    clear_embedders()
    monkeypatch.setattr(query, "light_encoder", lambda p, bulk=False: None)
    params = EmbedParams.model_validate({"provider": "fake"})
    sent: list[list[str]] = []

    def failing(p: EmbedParams, texts: list[str], prompt: str) -> np.ndarray:
        sent.append(list(texts))
        exc = EmbedError("second request refused")
        exc.partial = {0: np.ones(256, dtype=np.float32)}  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(cached, "_embed", failing)
    path = tmp_path / "cache.sqlite"
    with pytest.raises(EmbedError):
        cached.embed_cached(params, ["paid for", "refused"], "", path)
    monkeypatch.setattr(cached, "_embed", lambda p, texts, prompt: sent.append(list(texts)) or np.zeros(
        (len(texts), 256), dtype=np.float32))
    vecs = cached.embed_cached(params, ["paid for", "refused"], "", path)
    assert sent[-1] == ["refused"]  # the salvaged vector came from the cache
    assert np.array_equal(vecs[0], np.ones(256, dtype=np.float32))
