"""A token-bucket rate limiter for calls to external services.

A token bucket holds up to ``capacity`` tokens and refills at ``rate`` tokens per second. Each call
spends one or more tokens; when the bucket is empty the caller waits until enough tokens have been
refilled. The bucket allows short bursts (up to ``capacity`` calls at once) while enforcing the long-run
average rate, which matches how most web APIs publish their limits, e.g. "600 requests per minute".

The limiter is thread-safe, and :class:`AsyncTokenBucket` offers the same behaviour to asyncio code.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class TokenBucket:
    """Thread-safe token bucket.

    Args:
        rate: tokens added per second; must be positive.
        capacity: maximum number of tokens; defaults to ``rate`` (one second of burst).
        clock: a monotonic clock, replaceable in tests.
    """

    def __init__(self, rate: float, capacity: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else rate
        self._tokens = self.capacity
        self._clock = clock
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if they are available right now; never blocks."""
        with self._lock:
            self._refill()
            if self._tokens >= tokens:
                self._tokens -= tokens
                return True
            return False

    def wait_time(self, tokens: float = 1.0) -> float:
        """Seconds until ``tokens`` would be available (0 if they are available now)."""
        with self._lock:
            self._refill()
            missing = tokens - self._tokens
            return max(0.0, missing / self.rate)

    def acquire(self, tokens: float = 1.0) -> None:
        """Block until ``tokens`` are available, then take them.

        Raises:
            ValueError: if more tokens are requested than the bucket can ever hold.
        """
        if tokens > self.capacity:
            raise ValueError(f"cannot acquire {tokens} tokens from a bucket of {self.capacity}")
        while not self.try_acquire(tokens):
            time.sleep(self.wait_time(tokens))


class AsyncTokenBucket(TokenBucket):
    """A token bucket for asyncio code: :meth:`acquire_async` sleeps without blocking the event loop."""

    async def acquire_async(self, tokens: float = 1.0) -> None:
        """Wait asynchronously until ``tokens`` are available, then take them."""
        if tokens > self.capacity:
            raise ValueError(f"cannot acquire {tokens} tokens from a bucket of {self.capacity}")
        while not self.try_acquire(tokens):
            await asyncio.sleep(self.wait_time(tokens))


def rate_limited(bucket: TokenBucket, tokens: float = 1.0) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator that makes every call of the wrapped function spend ``tokens`` from ``bucket``.

    Example::

        api_bucket = TokenBucket(rate=10, capacity=20)   # 10 calls/s, bursts of 20

        @rate_limited(api_bucket)
        def fetch(url: str) -> bytes: ...
    """

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bucket.acquire(tokens)
            return func(*args, **kwargs)

        return wrapper

    return decorator


if __name__ == "__main__":
    bucket = TokenBucket(rate=5, capacity=5)
    start = time.monotonic()
    for i in range(12):
        bucket.acquire()
        print(f"call {i:2d} at {time.monotonic() - start:5.2f} s")
