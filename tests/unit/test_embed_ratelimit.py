"""Token-bucket math, the shared limiter, and rate-limit header parsing."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from embedline.tasks.embed.ratelimit import (
    RateLimiter,
    TokenBucket,
    clear_limiters,
    parse_duration,
    prefect_limit_name,
    reset_seconds,
    retry_after_seconds,
    shared_limiter,
    wait_from_headers,
)

pytestmark = pytest.mark.unit


class FakeClock:
    """A manual clock whose sleep advances time (no real waiting)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


# ---- durations and headers --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1.5s", 1.5), ("20ms", 0.02), ("1h2m3s", 3723.0), ("30", 30.0), ("0.25", 0.25),
     ("2m30.5s", 150.5), ("500us", 0.0005), (" 7s ", 7.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "5x", "s", "1m junk"])
def test_parse_duration_rejects_garbage(text: str | None) -> None:
    assert parse_duration(text) is None


def test_retry_after_ms_wins_and_headers_are_case_insensitive() -> None:
    assert retry_after_seconds({"Retry-After-Ms": "250", "Retry-After": "9"}) == pytest.approx(0.25)
    assert retry_after_seconds({"RETRY-AFTER": "3"}) == 3.0
    assert retry_after_seconds({}) is None


def test_retry_after_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    secs = retry_after_seconds({"retry-after": format_datetime(when, usegmt=True)})
    assert secs is not None and 28 <= secs <= 31


def test_reset_headers_only_for_exhausted_limits() -> None:
    h = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert reset_seconds(h) == 1.0
    assert wait_from_headers(h, is_429=False) == 1.0
    h["x-ratelimit-remaining-tokens"] = "0"
    assert reset_seconds(h) == 360.0
    assert wait_from_headers({"x-ratelimit-remaining-requests": "3"}, is_429=False) is None


def test_429_prefers_retry_after_then_resets() -> None:
    assert wait_from_headers({"retry-after": "2", "x-ratelimit-reset-tokens": "9s"}, is_429=True) == 2.0
    assert wait_from_headers({"x-ratelimit-reset-tokens": "20ms"}, is_429=True) == pytest.approx(0.02)
    assert wait_from_headers({}, is_429=True) is None


# ---- bucket math -----------------------------------------------------------------------------------
def test_bucket_starts_with_one_second_burst_then_paces() -> None:
    clock = FakeClock()
    b = TokenBucket(per_minute=120, clock=clock)  # 2 per second, capacity 2
    assert b.capacity == 2
    assert [b.reserve(1) for _ in range(2)] == [0.0, 0.0]
    assert b.reserve(1) == pytest.approx(0.5)
    assert b.reserve(1) == pytest.approx(1.0)  # reservations queue up fairly
    clock.now += 10
    assert b.level() == pytest.approx(2.0)  # refill is capped at capacity


def test_oversized_reservation_goes_into_debt_but_keeps_the_rate() -> None:
    clock = FakeClock()
    b = TokenBucket(per_minute=600, clock=clock)  # 10 per second, capacity 10
    assert b.reserve(25) == 0.0  # a full bucket admits a request bigger than itself...
    assert b.reserve(5) == pytest.approx(2.0)  # ...and the debt (15) + 5 is repaid at 10/s


def test_limiter_long_run_rate_with_fake_clock() -> None:
    clock = FakeClock()
    lim = RateLimiter(requests_per_minute=600, tokens_per_minute=6000, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(100):
        lim.acquire(tokens=20)  # tokens bind: 100 tokens/s -> 5 requests/s
    elapsed = clock.now - start
    assert elapsed == pytest.approx((100 * 20 - 100) / 100, rel=0.01)


def test_block_for_holds_every_caller_and_never_shortens() -> None:
    clock = FakeClock()
    lim = RateLimiter(clock=clock, sleep=clock.sleep)
    lim.block_for(5)
    lim.block_for(1)  # shorter: ignored
    lim.acquire()
    assert clock.now == pytest.approx(105.0)


def test_limiter_is_thread_safe_with_real_clock() -> None:
    lim = RateLimiter(requests_per_minute=3000)  # 50/s, burst 50
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(15):
            lim.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 90 requests: 50 as the initial burst, 40 more at 50/s -> at least 0.8 s
    assert len(stamps) == 90
    assert time.monotonic() - t0 >= 0.75


def test_shared_limiter_is_one_per_endpoint_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    clear_limiters()
    a = shared_limiter("openai", "http://x/v1", "m", 60, None)
    assert shared_limiter("openai", "http://x/v1", "m", 60, None) is a
    assert shared_limiter("openai", "http://y/v1", "m", 60, None) is not a
    assert a.prefect_limit is None
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    clear_limiters()
    b = shared_limiter("openai", None, "text-embedding-3-small", 60, None)
    assert b.prefect_limit == prefect_limit_name("openai", "text-embedding-3-small")
    assert b.prefect_limit == "embed-openai-text-embedding-3-small"
    clear_limiters()


def test_prefect_layer_called_per_request_and_switched_off_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prefect.concurrency.sync as sync

    from embedline.tasks.embed import ratelimit

    calls: list[tuple[str, int, bool]] = []

    def fake_rate_limit(names: str, occupy: int = 1, strict: bool = False, **_: object) -> None:
        calls.append((names, occupy, strict))
        if len(calls) == 2:
            raise ConnectionError("server down")

    monkeypatch.setattr(sync, "rate_limit", fake_rate_limit)
    ratelimit.reset_prefect_layer()
    lim = RateLimiter(requests_per_minute=6000, prefect_limit="embed-openai-m")
    for _ in range(4):
        lim.acquire()
    assert calls == [("embed-openai-m", 1, False)] * 2  # the failure switched the layer off
    ratelimit.reset_prefect_layer()


# ---- issue 14: limits are promises under load ------------------------------------------------------
def _max_in_window(stamps: list[tuple[float, float]], window: float = 60.0) -> float:
    """Largest total of amounts sent inside any closed window [t, t + window]."""
    stamps = sorted(stamps)
    return max(sum(a for u, a in stamps if t <= u <= t + window) for t, _ in stamps)


def test_token_limit_holds_in_every_minute_even_with_requests_bigger_than_the_burst() -> None:
    """Row 7: 9,000 TPM once held 9,772 tokens in 60 s (burst + debt on top of the refill)."""
    import random

    clock = FakeClock()
    lim = RateLimiter(tokens_per_minute=9000, clock=clock, sleep=clock.sleep)
    rng = random.Random(7)
    sent = []
    for _ in range(300):
        n = rng.randint(50, 800)  # many requests larger than one second's worth (150)
        lim.acquire(tokens=n)
        sent.append((clock.now, float(n)))
    assert _max_in_window(sent) <= 9000


def test_request_limit_holds_in_every_minute() -> None:
    """Row 7: 20 RPM once let 21 requests into one 60 s window."""
    clock = FakeClock()
    lim = RateLimiter(requests_per_minute=20, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(90):
        lim.acquire()
        sent.append((clock.now, 1.0))
    assert _max_in_window(sent) <= 20
    assert clock.now - 100.0 < 5 * 60  # and it still runs at the limit, not far below it


def test_shared_limiter_is_one_object_for_any_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 11: 31 RPM (31/60*60 != 31 in floats) made a new limiter per call."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    clear_limiters()
    for rpm, tpm in [(31, None), (7, 1234.5), (None, 99991)]:
        assert shared_limiter("openai", "http://x/v1", "m", rpm, tpm) is shared_limiter("openai", "http://x/v1", "m", rpm, tpm)
    a = shared_limiter("openai", "http://x/v1", "m", 31, None)
    b = shared_limiter("openai", "http://x/v1", "m", 62, None)  # other limits: reconfigured, still one
    assert a is b and b.limits == (62, None)
    clear_limiters()


def test_block_is_checked_again_after_the_prefect_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 4: a 429 that arrives while a caller waits for Prefect's slot must still hold it."""
    import prefect.concurrency.sync as sync

    from embedline.tasks.embed import ratelimit

    clock = FakeClock()
    lim = RateLimiter(requests_per_minute=6000, prefect_limit="embed-x", clock=clock, sleep=clock.sleep)

    def slow_slot(*_: object, **__: object) -> None:
        lim.block_for(2.0)  # another caller's 429 lands during this server round trip

    monkeypatch.setattr(sync, "rate_limit", slow_slot)
    ratelimit.reset_prefect_layer()
    start = clock.now
    lim.acquire()
    assert clock.now >= start + 2.0
    ratelimit.reset_prefect_layer()


@pytest.mark.timeout(30)
def test_a_hung_prefect_call_is_abandoned_and_the_layer_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 5: one rate-limit call hung 190 s (no timeout)."""
    import prefect.concurrency.sync as sync

    from embedline.tasks.embed import ratelimit

    release = threading.Event()
    calls: list[object] = []

    def hung(*args: object, **kwargs: object) -> None:
        calls.append(kwargs.get("timeout_seconds"))
        release.wait(60)

    monkeypatch.setattr(sync, "rate_limit", hung)
    ratelimit.reset_prefect_layer()
    try:
        lim = RateLimiter(requests_per_minute=6000, prefect_limit="embed-x", prefect_timeout_s=0.2)
        for _ in range(3):
            lim.acquire()  # would never return with an unbounded call
        assert calls == [0.2]  # bounded, then the layer is off: one call only
    finally:
        release.set()
        ratelimit.reset_prefect_layer()


def test_after_a_block_one_probe_goes_first_and_the_others_wait_for_its_answer() -> None:
    """Row 4: in a 429 storm all waiters woke at the same instant and fired into the next window."""
    lim = RateLimiter()
    lim.block_for(0.2)
    events: list[tuple[str, int]] = []
    lock = threading.Lock()

    def caller(i: int) -> None:
        with lim.request():
            with lock:
                events.append(("send", i))
            time.sleep(0.1)  # the request's round trip
            with lock:
                events.append(("answer", i))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = events[0][1]
    assert events[:2] == [("send", first), ("answer", first)]  # nobody sent before the probe's answer
