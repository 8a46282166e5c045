"""The OpenAI provider against a real HTTP server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, EmbedParams, load_config
from embedline.tasks.embed import (
    EmbedError,
    EmbedInputError,
    EmbedResponseError,
    EmbedTransientError,
    clear_embedders,
    get_embedder,
    run_embed,
)
from embedline.tasks.embed.cache import EmbeddingCache
from embedline.tasks.embed.ratelimit import clear_limiters
from embedline.tasks.embed.stage import cache_path
from embedline.tasks.tokenize import load_token_counter
from embedline.tasks.vector_shards import read_all
from tests.fakes.chunks import write_chunks
from tests.fakes.openai_server import Fault, OpenAIFakeServer, fake_vector

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TEXTS = [f"document number {i} talks about topic {i % 7} in some detail" for i in range(23)]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("EMBEDLINE_TEST_KEY", "sk-test-secret")
    clear_embedders()
    clear_limiters()
    yield
    clear_embedders()
    clear_limiters()


@pytest.fixture
def server() -> Iterator[OpenAIFakeServer]:
    with OpenAIFakeServer(dims=32, api_key="sk-test-secret") as srv:
        yield srv


def params(srv: OpenAIFakeServer, **kw: object) -> EmbedParams:
    base: dict[str, object] = {
        "provider": "openai",
        "model": "fake-embedding-model",
        "base_url": srv.base_url,
        "api_key_env": "EMBEDLINE_TEST_KEY",
        "max_retries": 4,
        "retry_initial_s": 0.02,
        "retry_max_s": 0.1,
        "timeout_s": 5.0,
        "concurrency": 1,
        "tokenizer": "conservative",  # offline: tiktoken has no encoding file here
    }
    base.update(kw)
    return EmbedParams.model_validate(base)


def expected(texts: list[str], dims: int = 32) -> np.ndarray:
    return np.stack([fake_vector(t, dims) for t in texts])


def stage_cfg(srv: OpenAIFakeServer, tmp_path: Path, **kw: object) -> tuple[Config, Artifacts]:
    art = Artifacts(tmp_path)
    embed = params(srv, cache_path=str(tmp_path / "cache.sqlite"), shard_rows=8, **kw)
    cfg = load_config(None, {"embed": embed.model_dump(mode="json")})
    return cfg, art


# ---- correctness -----------------------------------------------------------------------------------
def test_every_input_once_and_in_order(server: OpenAIFakeServer) -> None:
    server.max_inputs = 5
    emb = get_embedder(params(server, max_inputs_per_request=5))
    vecs = emb.embed(TEXTS)
    np.testing.assert_allclose(vecs, expected(TEXTS), atol=1e-6)
    assert Counter(server.embedded_texts()) == Counter(TEXTS)
    assert all(len(r.inputs) <= 5 for r in server.records)
    assert len(server.records) == 5  # ceil(23 / 5), no failures


def test_stage_embeds_unique_texts_once_and_rerun_sends_nothing(
    server: OpenAIFakeServer, tmp_path: Path
) -> None:
    texts = TEXTS[:10] + TEXTS[:5]  # five exact duplicates
    write_chunks(Artifacts(tmp_path).chunks, texts)
    cfg, art = stage_cfg(server, tmp_path, max_inputs_per_request=4, concurrency=3)
    first = run_embed(cfg, art)
    assert Counter(server.embedded_texts()) == Counter(TEXTS[:10])
    vectors = read_all(art.vectors)
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)
    assert (first["unique_texts"], first["cache_misses"], first["texts_embedded"]) == (10, 10, 10)

    sent = len(server.records)
    second = run_embed(cfg, art)
    assert len(server.records) == sent  # zero requests on a re-run
    assert (second["cache_hits"], second["texts_embedded"]) == (10, 0)
    assert read_all(art.vectors).tobytes() == vectors.tobytes()


def test_dimensions_passed_through(server: OpenAIFakeServer) -> None:
    emb = get_embedder(params(server, dimensions=16))
    vecs = emb.embed(TEXTS[:3])
    assert vecs.shape == (3, 16)
    assert {r.dimensions for r in server.records} == {16}


def test_empty_text_never_sent(server: OpenAIFakeServer) -> None:
    with pytest.raises(EmbedInputError, match="empty"):
        get_embedder(params(server)).embed(["fine", "  "])
    assert server.records == []


# ---- rate limits ------------------------------------------------------------------------------------
def test_no_request_inside_retry_after_window(server: OpenAIFakeServer) -> None:
    server.script = [None, Fault("429", retry_after=0.6), None, Fault("429", retry_after_ms=300)]
    emb = get_embedder(params(server, max_inputs_per_request=2))
    vecs = emb.embed(TEXTS[:10])
    np.testing.assert_allclose(vecs, expected(TEXTS[:10]), atol=1e-6)
    assert len(server.windows) == 2
    assert server.violations == []
    times = [r.t for r in server.records]
    for start, end in server.windows:
        after = [t for t in times if t > start]
        assert after and min(after) >= end  # the next request waited for the whole window


def test_concurrent_callers_share_the_retry_after_block(server: OpenAIFakeServer, tmp_path: Path) -> None:
    write_chunks(Artifacts(tmp_path).chunks, TEXTS)
    cfg, art = stage_cfg(server, tmp_path, max_inputs_per_request=2, concurrency=4)
    server.script = [None, None, Fault("429", retry_after=0.5)]
    run_embed(cfg, art)
    assert Counter(server.embedded_texts()) == Counter(TEXTS)
    start, end = server.windows[0]
    # only requests already in flight when the 429 left the server may land in the window
    assert all(t - start < 0.05 for t in server.violations)
    late = [r.t for r in server.records if start + 0.05 <= r.t < end]
    assert late == []


def test_ratelimit_reset_headers_on_success_block(server: OpenAIFakeServer) -> None:
    server.success_headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"}
    emb = get_embedder(params(server, max_inputs_per_request=1))
    emb.embed(TEXTS[:3])
    times = [r.t for r in server.records]
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(times))


def _max_excess(times: list[float], costs: list[float], per_second: float, burst: float) -> float:
    """Largest amount by which any window [t_i, t_j] exceeds rate * span + burst."""
    worst = -1e9
    for i in range(len(times)):
        used = 0.0
        for j in range(i, len(times)):
            used += costs[j]
            worst = max(worst, used - (per_second * (times[j] - times[i]) + burst))
    return worst


def test_observed_request_and_token_rates_within_limits(server: OpenAIFakeServer) -> None:
    rpm, tpm = 1200.0, 6000.0  # 20 requests/s, 100 tokens/s
    p = params(server, max_inputs_per_request=1, requests_per_minute=rpm, tokens_per_minute=tpm)
    emb = get_embedder(p)
    counter = load_token_counter(p)
    texts = [f"short text {i}" for i in range(24)]
    t0 = time.monotonic()
    emb.embed(texts)
    elapsed = time.monotonic() - t0
    ok = server.ok_records()
    times = [r.t for r in ok]
    tokens = [float(sum(counter.count(x) for x in r.inputs)) for r in ok]
    # bursts are at most one second's worth (the buckets' capacity); allow 2 % clock slack
    assert _max_excess(times, [1.0] * len(times), rpm / 60 * 1.02, rpm / 60) <= 1.0
    assert _max_excess(times, tokens, tpm / 60 * 1.02, tpm / 60) <= max(tokens)
    assert elapsed >= (sum(tokens) - tpm / 60) / (tpm / 60) * 0.95  # the token limit did bind


# ---- transient failures -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault",
    [Fault("500"), Fault("drop"), Fault("reset"), Fault("slow", delay=1.5), Fault("not_json")],
    ids=["500", "drop", "reset", "slow", "not_json"],
)
def test_transient_failures_are_retried(server: OpenAIFakeServer, fault: Fault) -> None:
    server.script = [fault, None]
    emb = get_embedder(params(server, timeout_s=0.5))
    vecs = emb.embed(TEXTS[:4])
    np.testing.assert_allclose(vecs, expected(TEXTS[:4]), atol=1e-6)
    assert len(server.records) == 2
    assert server.embedded_texts() == TEXTS[:4] or Counter(server.embedded_texts()) == Counter(TEXTS[:4])


def test_retries_are_bounded(server: OpenAIFakeServer) -> None:
    server.script = [Fault("500")] * 10
    with pytest.raises(EmbedTransientError, match="gave up after 3 attempts"):
        get_embedder(params(server, max_retries=2)).embed(TEXTS[:2])
    assert len(server.records) == 3


# ---- oversize ---------------------------------------------------------------------------------------
def test_413_splits_the_batch_in_halves(server: OpenAIFakeServer) -> None:
    server.max_inputs = 3
    emb = get_embedder(params(server, max_inputs_per_request=8))
    vecs = emb.embed(TEXTS[:8])
    np.testing.assert_allclose(vecs, expected(TEXTS[:8]), atol=1e-6)
    assert Counter(server.embedded_texts()) == Counter(TEXTS[:8])
    # 8 -> 413 -> 4 + 4; each 4 -> 413 -> 2 + 2: three refusals, four successful requests
    assert [r.status for r in server.records].count(413) == 3
    assert len(server.ok_records()) == 4
    assert max(len(r.inputs) for r in server.ok_records()) <= 3


def test_single_oversized_input_is_a_clear_error(server: OpenAIFakeServer) -> None:
    server.max_chars = 20
    with pytest.raises(EmbedInputError, match="too large"):
        get_embedder(params(server)).embed(["x" * 50])


# ---- fail fast --------------------------------------------------------------------------------------
def test_401_fails_after_exactly_one_request(server: OpenAIFakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDLINE_TEST_KEY", "sk-wrong-key-value")
    with pytest.raises(EmbedError, match="401") as err:
        get_embedder(params(server)).embed(TEXTS[:3])
    assert len(server.records) == 1
    assert "sk-wrong-key-value" not in str(err.value)
    assert "api_key_env" in str(err.value)


def test_missing_key_without_base_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDLINE_TEST_KEY", raising=False)
    with pytest.raises(EmbedError, match="EMBEDLINE_TEST_KEY"):
        get_embedder(
            EmbedParams.model_validate(
                {"provider": "openai", "model": "text-embedding-3-small", "api_key_env": "EMBEDLINE_TEST_KEY"}
            )
        )


@pytest.mark.parametrize("kind", ["bad_count", "nan", "zero", "wrong_dims"])
def test_bad_responses_are_rejected_and_not_cached(server: OpenAIFakeServer, tmp_path: Path, kind: str) -> None:
    write_chunks(Artifacts(tmp_path).chunks, TEXTS[:4])
    cfg, art = stage_cfg(server, tmp_path, dimensions=32)
    server.script = [Fault(kind)]
    with pytest.raises(EmbedResponseError):
        run_embed(cfg, art)
    with EmbeddingCache(cache_path(cfg, art)) as cache:
        assert cache.count() == 0
    assert not list(art.vectors.glob('shard-*'))


def test_429_without_hint_backs_off_every_caller(server: OpenAIFakeServer) -> None:
    server.script = [Fault("429")]
    emb = get_embedder(params(server, retry_initial_s=0.3, retry_max_s=0.3))
    emb.embed(TEXTS[:2])
    assert [r.status for r in server.records] == [429, 200]
    assert server.records[1].t - server.records[0].t >= 0.25
    assert emb.limiter.waited_s >= 0.25  # type: ignore[attr-defined]


def test_plain_400_fails_fast_without_splitting(server: OpenAIFakeServer) -> None:
    server.script = [Fault("400")]
    with pytest.raises(EmbedError, match="HTTP 400"):
        get_embedder(params(server)).embed(TEXTS[:8])
    assert len(server.records) == 1


# ---- issue 14: promises under fault injection -------------------------------------------------------
@pytest.mark.parametrize(
    "fault",
    [Fault("429", retry_after=1), Fault("429", retry_after_ms=700), Fault("429", retry_after_date=1.5)],
    ids=["seconds", "milliseconds", "http-date"],
)
def test_retry_after_in_every_format_is_honoured(server: OpenAIFakeServer, fault: Fault) -> None:
    server.script = [None, fault]
    emb = get_embedder(params(server, max_inputs_per_request=2, concurrency=1))
    emb.embed(TEXTS[:6])
    assert len(server.windows) == 1
    assert server.violations == [] and server.crowded == []
    start, end = server.windows[0]
    assert min(r.t for r in server.records if r.t > start) >= end
    assert server.paid_twice() == []


def _fake_prefect_layer(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    """The cross-process limiter, with the round trip it costs against a real server (0.1-0.5 s)."""
    import prefect.concurrency.sync as sync

    from embedline.tasks.embed import ratelimit

    def rate_limit(names: str, occupy: int = 1, timeout_seconds: float | None = None, strict: bool = False) -> None:
        calls.append(names)
        time.sleep(0.2)

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setattr(sync, "rate_limit", rate_limit)
    ratelimit.reset_prefect_layer()


@pytest.mark.parametrize("prefect_layer", [False, True], ids=["in-process", "cross-process"])
def test_429_storm_whole_run_pays_once_and_never_fires_into_a_window(
    server: OpenAIFakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_layer: bool
) -> None:
    """Issue 14 rows 3 + 4: a storm of 429s (Retry-After 1 s) mixed with 500s, resets, non-JSON
    200s and slow answers, three requests in flight: every text paid once over the whole run,
    no request inside a window (beyond those already in flight), one probe after each window."""
    calls: list[str] = []
    if prefect_layer:
        _fake_prefect_layer(monkeypatch, calls)
    write_chunks(Artifacts(tmp_path).chunks, TEXTS)
    cfg, art = stage_cfg(server, tmp_path, max_inputs_per_request=2, concurrency=3, max_retries=8,
                         requests_per_minute=6000)
    server.script = [None, None, Fault("slow_ok", delay=0.3), Fault("500"), Fault("reset"),
                     Fault("429", retry_after=1), Fault("429", retry_after=1), Fault("not_json"),
                     Fault("429", retry_after=1, delay=0.2), Fault("429", retry_after_ms=1000), None]
    stats = run_embed(cfg, art)
    assert stats["texts_embedded"] == len(set(TEXTS))
    assert server.paid() == Counter(set(TEXTS))  # each text paid exactly once
    assert len(server.windows) >= 3
    assert server.late_violations(grace=0.5) == []  # in flight when the 429 left
    assert server.crowded == []
    assert bool(calls) is prefect_layer
    np.testing.assert_allclose(read_all(art.vectors), expected(TEXTS), atol=1e-6)


def test_in_flight_successes_are_cached_when_another_request_gives_up(
    server: OpenAIFakeServer, tmp_path: Path
) -> None:
    """Issue 14 row 3: a request that exhausted its retries made the others' vectors be paid twice."""
    write_chunks(Artifacts(tmp_path).chunks, TEXTS[:12])
    cfg, art = stage_cfg(server, tmp_path, max_inputs_per_request=2, concurrency=3, max_retries=1)
    # whichever request comes first fails twice and gives up while the other two are still slow
    server.script = [Fault("500"), Fault("slow_ok", delay=0.6), Fault("slow_ok", delay=0.6), Fault("500")]
    with pytest.raises(EmbedTransientError):
        run_embed(cfg, art)
    first_bill = server.paid()
    assert sum(first_bill.values()) >= 4  # the two slow ones (a free worker may start one more)
    with EmbeddingCache(cache_path(cfg, art)) as cache:
        assert cache.count() == sum(first_bill.values())  # everything paid for is cached
    run_embed(cfg, art)
    assert server.paid_twice() == []
    assert server.paid() == Counter(TEXTS[:12])


def test_halves_that_succeeded_before_the_other_half_failed_are_cached(
    server: OpenAIFakeServer, tmp_path: Path
) -> None:
    """Row 3 within one request: a 413 split whose second half fails keeps the first half."""
    write_chunks(Artifacts(tmp_path).chunks, TEXTS[:4])
    cfg, art = stage_cfg(server, tmp_path, max_inputs_per_request=4, concurrency=1, max_retries=1)
    server.max_inputs = 2
    server.script = [None, None, Fault("500"), Fault("500")]  # 413, left half ok, right half fails
    with pytest.raises(EmbedTransientError):
        run_embed(cfg, art)
    with EmbeddingCache(cache_path(cfg, art)) as cache:
        assert cache.count() == 2
    server.max_inputs = None
    run_embed(cfg, art)
    assert server.paid_twice() == []


def test_unknown_model_dims_never_spend_a_hidden_request(server: OpenAIFakeServer) -> None:
    """Issue 14 row 14: reading ``dims`` of an unknown model made a paid request."""
    emb = get_embedder(params(server))
    with pytest.raises(EmbedError, match=r"embed\.dimensions"):
        _ = emb.dims
    assert server.records == []
    assert emb.probe_dims() == 32  # type: ignore[attr-defined]
    assert len(server.records) == 1
    assert emb.dims == 32


def test_evaluation_queries_and_documents_go_through_the_cache(server: OpenAIFakeServer, tmp_path: Path) -> None:
    """Issue 14 row 16: a re-run of an evaluation sent query requests again."""
    from embedline.tasks.evaluation.baselines import WholeDocRetriever
    from embedline.tasks.evaluation.interface import EvalDoc

    cfg, art = stage_cfg(server, tmp_path)
    docs = [EvalDoc(f"d{i}", "", t, None) for i, t in enumerate(TEXTS[:6])]
    queries = {f"q{i}": f"what does document {i} say" for i in range(4)}
    first = WholeDocRetriever(docs, cfg.embed, cfg, art).search(queries, k=3)
    sent = len(server.records)
    assert sent > 0
    clear_embedders()
    again = WholeDocRetriever(docs, cfg.embed, cfg, art).search(queries, k=3)
    assert len(server.records) == sent  # zero requests on a no-change re-run
    assert again == first


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_429_storm_with_a_real_prefect_rate_limit(
    server: OpenAIFakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same storm with the cross-process layer on a real Prefect server (slot decay limit)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.context import refresh_global_settings_context

    from embedline.flows.serve import ServerInfo, free_port, start_server, stop_server
    from embedline.tasks.embed import ratelimit

    (tmp_path / "prefect").mkdir()
    info = ServerInfo("127.0.0.1", free_port(), tmp_path / "prefect")
    start_server(info, timeout=180)
    try:
        # as when PREFECT_API_URL is set before the process starts (the embed threads see it too)
        monkeypatch.setenv("PREFECT_API_URL", info.api_url)
        refresh_global_settings_context()
        name = ratelimit.prefect_limit_name("openai", "fake-embedding-model")
        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=50, slot_decay_per_second=50)
            )
        ratelimit.reset_prefect_layer()
        write_chunks(Artifacts(tmp_path).chunks, TEXTS)
        cfg, art = stage_cfg(server, tmp_path, max_inputs_per_request=2, concurrency=3, max_retries=8,
                             requests_per_minute=6000)
        server.script = [None, Fault("500"), Fault("429", retry_after=1), Fault("429", retry_after=1),
                         Fault("not_json"), Fault("429", retry_after_ms=1000), None]
        run_embed(cfg, art)
        assert not ratelimit._prefect_disabled  # the layer stayed on for the whole run
    finally:
        stop_server(info.home)
        monkeypatch.delenv("PREFECT_API_URL")
        refresh_global_settings_context()
        ratelimit.reset_prefect_layer()
    assert server.paid() == Counter(set(TEXTS))
    assert server.late_violations(grace=0.5) == []  # in flight when the 429 left
    assert server.crowded == []
