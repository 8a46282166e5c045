"""Proactive rate limiting shared by every caller in the process, and rate-limit header parsing.

* :class:`TokenBucket`: a thread-safe bucket that refills ``per_minute / 60`` units per second up to
  ``capacity`` (one second's worth by default, so bursts stay small). Callers *reserve* first and
  sleep after, which makes waiting FIFO-fair across threads. A request larger than the capacity is
  admitted when the bucket is full and leaves it in debt, so the long-run rate still holds.
* :class:`SlidingWindow`: the hard bound: never more than the limit inside any 60 s window (the
  buckets alone would allow their burst on top of a minute's refill).
* :class:`RateLimiter`: request/token buckets and windows + a "blocked until" instant that every
  caller honours (set from ``Retry-After`` / ``retry-after-ms`` / ``x-ratelimit-reset-*``); after a
  block one probe request goes first and the others wait for its answer.
* :func:`shared_limiter`: one limiter per (provider, base_url, model) in the process.
* Cross-process: when ``PREFECT_API_URL`` is set and ``embed.requests_per_minute`` is set, each
  request also takes a slot of the Prefect global concurrency limit named by
  :func:`prefect_limit_name` (create it with a slot decay, e.g.
  ``prefect gcl create embed-openai-text-embedding-3-small --limit 50 --slot-decay-per-second 50``).
  A missing limit applies no limit (Prefect only warns; ``strict=False``); the in-process bucket
  remains the precise limiter (Prefect's limits are coarse on a SQLite server). A Prefect call that
  does not answer within :data:`PREFECT_TIMEOUT_S` switches that layer off; the block is checked
  again after it (the call takes 0.1-0.5 s, long enough for another caller's 429 to arrive).
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from embedline.tasks import resources
from embedline.tasks.retrying import parse_duration, retry_after_seconds

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# ---- header parsing ------------------------------------------------------------------------------
def _lower(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers or {}).items()}


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


class SlidingWindow:
    """The hard per-minute promise: at most ``limit`` units inside any ``window`` seconds.

    A token bucket alone lets a window hold its burst capacity on top of a minute's refill (and a
    request bigger than the capacity goes into debt), so a minute could see ``limit`` + one request.
    This log of (send time, amount) answers "when may ``amount`` more go?" exactly. A single
    request larger than ``limit`` goes alone, once the window is empty. Not locked: the owning
    :class:`RateLimiter` serialises calls.
    """

    MARGIN = 0.01  # the window is held 1 % longer: the server's clock and arrival times are not ours

    def __init__(self, limit: float, window: float = 60.0):
        self.limit = float(limit)
        self.window = float(window) * (1 + self.MARGIN)
        self._log: deque[tuple[float, float]] = deque()
        self._last = float("-inf")

    def earliest(self, amount: float, t: float) -> float:
        """The first instant >= ``t`` (and >= the last reservation) at which ``amount`` fits."""
        t = max(t, self._last)
        need = min(float(amount), self.limit)
        inside = [(when, a) for when, a in self._log if when > t - self.window]
        used = sum(a for _, a in inside)
        for when, a in inside:
            if used + need <= self.limit + 1e-9:
                break
            used -= a
            t = max(t, when + self.window)  # wait until this one leaves the window
        return t

    def record(self, t: float, amount: float) -> None:
        while self._log and self._log[0][0] <= t - self.window:
            self._log.popleft()
        self._log.append((t, float(amount)))
        self._last = max(self._last, t)


class RateLimiter:
    """Requests/minute + tokens/minute (buckets for pacing, sliding windows for the hard per-minute
    bound) and a shared "blocked until" instant.

    After a block (a 429's Retry-After, or a limit reported at zero) the first request to go is a
    *probe*: callers that use :meth:`request` wait until the probe's answer is in (a new 429 blocks
    again) instead of all waking at the same instant and landing in the next Retry-After window.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        prefect_limit: str | None = None,
        window_s: float = 60.0,
        prefect_timeout_s: float | None = None,
        probe_timeout_s: float = 300.0,
    ):
        self._clock = clock
        self._sleep = sleep
        self.window_s = window_s
        self.prefect_limit = prefect_limit
        self.prefect_timeout_s = prefect_timeout_s if prefect_timeout_s is not None else PREFECT_TIMEOUT_S
        self.probe_timeout_s = probe_timeout_s
        self._blocked_until = 0.0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._probe_pending = False  # a block was set: the next request to go is a probe
        self._probe_active = False  # a probe is in flight: request() callers wait for its answer
        self.waited_s = 0.0  # total time callers slept here (for stats)
        self.configure(requests_per_minute, tokens_per_minute)

    def configure(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        """Set the limits (exactly as configured: they are compared as given, never re-derived)."""
        clock = self._clock
        with self._lock:
            self.limits = (requests_per_minute, tokens_per_minute)
            rpm, tpm = requests_per_minute, tokens_per_minute
            per_window = self.window_s / 60.0
            self.requests = TokenBucket(rpm / per_window, clock=clock) if rpm else None
            self.tokens = TokenBucket(tpm / per_window, clock=clock) if tpm else None
            self._request_window = SlidingWindow(rpm, self.window_s) if rpm else None
            self._token_window = SlidingWindow(tpm, self.window_s) if tpm else None

    @property
    def blocked_until(self) -> float:
        with self._lock:
            return self._blocked_until

    def block_for(self, seconds: float) -> None:
        """Hold every caller off for ``seconds`` from now (never shortens an existing block)."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, seconds))
            self._probe_pending = True

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

    def _reserve(self, tokens: int) -> float:
        """Take the bucket and window slots for one request; return the instant it may go."""
        now = self._clock()
        at = now
        if self.requests is not None:
            at = max(at, now + self.requests.reserve(1))
        if self.tokens is not None and tokens > 0:
            at = max(at, now + self.tokens.reserve(tokens))
        with self._lock:
            windows = [(w, a) for w, a in ((self._request_window, 1), (self._token_window, tokens)) if w and a]
            settled = False
            while not settled:  # the first instant that fits every window
                later = max([at, *(w.earliest(a, at) for w, a in windows)])
                settled, at = later == at, later
            for w, a in windows:
                w.record(at, a)
        return at

    def _admit(self, tokens: int, may_probe: bool) -> bool:
        self._wait_block()
        delay = self._reserve(tokens) - self._clock()
        if delay > 0:
            self._pause(delay)
        if self.prefect_limit:
            prefect_rate_limit(self.prefect_limit, self.prefect_timeout_s)
        return self._gate(may_probe)

    def _gate(self, may_probe: bool) -> bool:
        """The last check before sending: no open block, no probe in flight. True: caller probes."""
        while True:
            self._wait_block()  # a 429 seen by another caller while we slept or asked Prefect
            with self._cond:
                if self._blocked_until > self._clock():
                    continue
                if self._probe_active and may_probe:
                    if not self._cond.wait(timeout=self.probe_timeout_s):
                        self._probe_active = False  # the probe never reported back: stop waiting
                    continue
                probe = may_probe and self._probe_pending
                if probe:
                    self._probe_pending, self._probe_active = False, True
                return probe

    def _end_probe(self) -> None:
        with self._cond:
            self._probe_active = False
            self._cond.notify_all()

    def acquire(self, tokens: int = 0) -> None:
        """Block until one request carrying ``tokens`` tokens may be sent (no probe protocol)."""
        self._admit(tokens, may_probe=False)

    @contextmanager
    def request(self, tokens: int = 0) -> Iterator[None]:
        """Hold a slot around sending one request and reading its answer (see the class docstring).
        Report a 429 / limit headers with :meth:`block_for` *inside* the block."""
        probe = self._admit(tokens, may_probe=True)
        try:
            yield
        finally:
            if probe:
                self._end_probe()


_limiters: dict[tuple[str, str, str], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(
    provider: str,
    base_url: str | None,
    model: str,
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
) -> RateLimiter:
    """The process-wide limiter for one endpoint + model (created on first use). Every caller of
    one endpoint + model shares it; a caller with other limits reconfigures it in place (the
    newest limits apply to all) rather than getting a second, independent budget."""
    key = (provider, base_url or "", model)
    use_prefect = bool(os.environ.get("PREFECT_API_URL")) and requests_per_minute is not None
    prefect = prefect_limit_name(provider, model) if use_prefect else None
    with _limiters_lock:
        lim = _limiters.get(key)
        if lim is None:
            lim = RateLimiter(requests_per_minute, tokens_per_minute, prefect_limit=prefect)
            _limiters[key] = lim
        elif lim.limits != (requests_per_minute, tokens_per_minute):
            lim.configure(requests_per_minute, tokens_per_minute)
            lim.prefect_limit = prefect
        return lim


def clear_limiters() -> None:
    with _limiters_lock:
        _limiters.clear()


resources.on_close("rate-limiters", clear_limiters)


# ---- cross-process (Prefect global concurrency limit) ---------------------------------------------
PREFECT_TIMEOUT_S = 10.0  # longest wait for one Prefect rate-limit slot before the layer is switched off


def prefect_limit_name(provider: str, model: str) -> str:
    """Name of the Prefect global concurrency limit used across processes for one model."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")
    return f"embed-{provider}-{safe}"


_prefect_disabled = False


def _disable_prefect(name: str, why: str) -> None:
    global _prefect_disabled
    _prefect_disabled = True
    log.warning("Prefect rate limit %r unavailable (%s); using the in-process limiter only", name, why)


def prefect_rate_limit(name: str, timeout_s: float = PREFECT_TIMEOUT_S) -> None:
    """Take one slot of Prefect's rate limit ``name``, waiting at most ``timeout_s``.

    A limit that does not exist applies no limit (Prefect logs a warning; ``strict=False``). If the
    server cannot be reached, or does not answer within ``timeout_s`` (a server answering 503 after
    minutes; Prefect's client retries on its own), the Prefect layer is switched off for the rest
    of the process after one warning; the in-process limiter still applies. The call runs in a
    daemon thread so that a hung request cannot hold the caller past the deadline.
    """
    if _prefect_disabled:
        return
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            from prefect.concurrency.sync import rate_limit

            rate_limit(name, occupy=1, timeout_seconds=timeout_s, strict=False)
        except BaseException as exc:  # noqa: BLE001 reported to the caller's thread below, never lost
            outcome.append(exc)

    ctx = contextvars.copy_context()
    worker = threading.Thread(target=ctx.run, args=(call,), daemon=True, name="prefect-rate-limit")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        _disable_prefect(name, f"no answer within {timeout_s:g} s")
    elif outcome:
        _disable_prefect(name, str(outcome[0]) or type(outcome[0]).__name__)


def reset_prefect_layer() -> None:
    """Re-enable the Prefect layer after a failure switched it off (tests)."""
    global _prefect_disabled
    _prefect_disabled = False
