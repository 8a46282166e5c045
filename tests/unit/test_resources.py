"""The process-wide resource registry: built once (also under concurrency), one close() for all."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from embedline.tasks import resources
from embedline.tasks.embed.ratelimit import _limiters, shared_limiter

pytestmark = pytest.mark.unit


class Handle:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_built_once_even_when_threads_race() -> None:
    builds: list[int] = []
    gate = threading.Barrier(4)

    def build() -> Handle:
        builds.append(1)
        time.sleep(0.05)  # widen the race window; no assertion depends on timing
        return Handle()

    def get(_: int) -> Handle:
        gate.wait()
        return resources.get("test-race", "k", build)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(get, range(4)))
    assert len(builds) == 1 and all(h is got[0] for h in got)
    resources.drop("test-race")
    assert got[0].closed == 1 and resources.peek("test-race", "k") is None


def test_close_releases_everything_and_runs_hooks() -> None:
    a = resources.get("test-a", 1, Handle)
    seen: list[Handle] = []
    b = resources.get("test-b", 2, Handle, close=seen.append)
    shared_limiter("openai", None, "m", 60, None)  # registered its cleanup with on_close
    assert _limiters
    resources.close()
    assert a.closed == 1 and seen == [b] and b.closed == 0
    assert resources.peek("test-a", 1) is None and not _limiters
    assert resources.get("test-a", 1, Handle) is not a  # built again after close
    resources.drop("test-a")


def test_a_failed_build_is_not_cached() -> None:
    def boom() -> Handle:
        raise RuntimeError("no model")

    with pytest.raises(RuntimeError):
        resources.get("test-fail", 0, boom)
    assert resources.get("test-fail", 0, Handle).closed == 0
    resources.drop("test-fail")
