"""Proactive rate limiting shared by every caller in the process, and rate-limit header parsing.

* :class:`TokenBucket`: a thread-safe bucket that refills ``per_minute / 60`` units per second up to
  ``capacity`` (one second's worth by default, so bursts stay small). Callers *reserve* first and
  sleep after, which makes waiting FIFO-fair across threads. A request larger than the capacity is
  admitted when the bucket is full and leaves it in debt, so the long-run rate still holds.
* :class:`RateLimiter`: a request bucket + a token bucket + a "blocked until" instant that every
  caller honours (set from ``Retry-After`` / ``retry-after-ms`` / ``x-ratelimit-reset-*``).
* :func:`shared_limiter`: one limiter per (provider, base_url, model) in the process.
* Cross-process: when ``PREFECT_API_URL`` is set and ``embed.requests_per_minute`` is set, each
  request also takes a slot of the Prefect global concurrency limit named by
  :func:`prefect_limit_name` (create it with a slot decay, e.g.
  ``prefect gcl create embed-openai-text-embedding-3-small --limit 50 --slot-decay-per-second 50``).
  A missing limit applies no limit (Prefect only warns; ``strict=False``); the in-process bucket
  remains the precise limiter (Prefect's limits are coarse on a SQLite server).
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from embedline.tasks import resources

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# ---- header parsing ------------------------------------------------------------------------------
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """Seconds in a Go-style duration ("6m0s", "1.5s", "20ms", "1h2m3s") or a plain number of
    seconds ("30", "0.5"). ``None`` when the value is missing or unparseable."""
    if value is None:
        return None
    v = value.strip().lower()
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _PART.finditer(v):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    return total if pos == len(v) and pos > 0 else None


def _lower(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers or {}).items()}


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Delay asked by ``retry-after-ms`` (milliseconds) or ``retry-after`` (seconds or HTTP date)."""
    h = _lower(headers)
    ms = h.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = h.get("retry-after")
    if ra is None:
        return None
    secs = parse_duration(ra)
    if secs is not None:
        return secs
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ref = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - ref)


def reset_seconds(headers: Mapping[str, str] | None, *, exhausted_only: bool = True) -> float | None:
    """Longest ``x-ratelimit-reset-{requests,tokens}`` among the limits that are exhausted
    (``x-ratelimit-remaining-* <= 0``). With ``exhausted_only=False`` a reset whose remaining count
    is not reported also counts (used on a 429 that names no cause)."""
    h = _lower(headers)
    waits = []
    for kind in ("requests", "tokens"):
        reset = parse_duration(h.get(f"x-ratelimit-reset-{kind}"))
        if reset is None:
            continue
        remaining = h.get(f"x-ratelimit-remaining-{kind}")
        try:
            exhausted = remaining is not None and float(remaining) <= 0
        except ValueError:
            exhausted = False
        if exhausted or (not exhausted_only and remaining is None):
            waits.append(reset)
    return max(waits) if waits else None


def wait_from_headers(headers: Mapping[str, str] | None, *, is_429: bool) -> float | None:
    """How long every caller should hold off after a response with these headers (None: no hint).

    A 429 honours Retry-After first, then the reset of the exhausted limit(s). A success response
    only blocks when it reports a limit already at zero remaining (we stop before being told no).
    """
    if is_429:
        ra = retry_after_seconds(headers)
        if ra is not None:
            return ra
        return reset_seconds(headers, exhausted_only=False)
    return reset_seconds(headers, exhausted_only=True)


# ---- buckets ------------------------------------------------------------------------------------
class TokenBucket:
    """Thread-safe token bucket with reservations (see module docstring)."""

    def __init__(
        self,
        per_minute: float,
        capacity: float | None = None,
        clock: Clock = time.monotonic,
    ):
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0")
        self.rate = per_minute / 60.0  # units per second
        self.capacity = float(capacity if capacity is not None else max(1.0, self.rate))
        self._clock = clock
        self._level = self.capacity
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._level = min(self.capacity, self._level + (now - self._last) * self.rate)
            self._last = now

    def reserve(self, amount: float) -> float:
        """Take ``amount`` now and return how many seconds the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            need = min(float(amount), self.capacity)
            delay = max(0.0, (need - self._level) / self.rate)
            self._level -= float(amount)
            return delay

    def level(self) -> float:
        with self._lock:
            self._refill(self._clock())
            return self._level


class RateLimiter:
    """Requests/minute + tokens/minute buckets and a shared "blocked until" instant."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        prefect_limit: str | None = None,
    ):
        self._clock = clock
        self._sleep = sleep
        self.requests = TokenBucket(requests_per_minute, clock=clock) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute, clock=clock) if tokens_per_minute else None
        self.prefect_limit = prefect_limit
        self._blocked_until = 0.0
        self._lock = threading.Lock()
        self.waited_s = 0.0  # total time callers slept here (for stats)

    @property
    def blocked_until(self) -> float:
        with self._lock:
            return self._blocked_until

    def block_for(self, seconds: float) -> None:
        """Hold every caller off for ``seconds`` from now (never shortens an existing block)."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, seconds))

    def _wait_block(self) -> None:
        while True:
            delay = self.blocked_until - self._clock()
            if delay <= 0:
                return
            self._pause(delay)

    def _pause(self, seconds: float) -> None:
        with self._lock:
            self.waited_s += seconds
        self._sleep(seconds)

    def acquire(self, tokens: int = 0) -> None:
        """Block until one request carrying ``tokens`` tokens may be sent."""
        self._wait_block()
        delay = 0.0
        if self.requests is not None:
            delay = max(delay, self.requests.reserve(1))
        if self.tokens is not None and tokens > 0:
            delay = max(delay, self.tokens.reserve(tokens))
        if delay > 0:
            self._pause(delay)
        self._wait_block()  # a 429 seen by another caller while we slept
        if self.prefect_limit:
            prefect_rate_limit(self.prefect_limit)


_limiters: dict[tuple[str, str, str], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(
    provider: str,
    base_url: str | None,
    model: str,
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
) -> RateLimiter:
    """The process-wide limiter for one endpoint + model (created on first use)."""
    key = (provider, base_url or "", model)
    with _limiters_lock:
        lim = _limiters.get(key)
        wanted = (requests_per_minute, tokens_per_minute)
        if lim is None or _limits_of(lim) != wanted:
            use_prefect = bool(os.environ.get("PREFECT_API_URL")) and requests_per_minute is not None
            lim = RateLimiter(
                requests_per_minute,
                tokens_per_minute,
                prefect_limit=prefect_limit_name(provider, model) if use_prefect else None,
            )
            _limiters[key] = lim
        return lim


def _limits_of(lim: RateLimiter) -> tuple[float | None, float | None]:
    rpm = lim.requests.rate * 60 if lim.requests else None
    tpm = lim.tokens.rate * 60 if lim.tokens else None
    return rpm, tpm


def clear_limiters() -> None:
    with _limiters_lock:
        _limiters.clear()


resources.on_close("rate-limiters", clear_limiters)


# ---- cross-process (Prefect global concurrency limit) ---------------------------------------------
def prefect_limit_name(provider: str, model: str) -> str:
    """Name of the Prefect global concurrency limit used across processes for one model."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")
    return f"embed-{provider}-{safe}"


_prefect_disabled = False


def prefect_rate_limit(name: str) -> None:
    """Take one slot of Prefect's rate limit ``name``.

    A limit that does not exist applies no limit (Prefect logs a warning; ``strict=False``). If the
    server cannot be reached, the Prefect layer is switched off for the rest of the process after
    one warning (each failed attempt costs seconds); the in-process limiter still applies.
    """
    global _prefect_disabled
    if _prefect_disabled:
        return
    try:
        from prefect.concurrency.sync import rate_limit

        rate_limit(name, occupy=1, strict=False)
    except Exception as exc:  # noqa: BLE001 the server is the optional, coarse layer: never fail a run on it
        _prefect_disabled = True
        log.warning("Prefect rate limit %r unavailable (%s); using the in-process limiter only", name, exc)


def reset_prefect_layer() -> None:
    """Re-enable the Prefect layer after a failure switched it off (tests)."""
    global _prefect_disabled
    _prefect_disabled = False
