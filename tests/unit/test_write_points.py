"""lifecycle.write_points: a store that builds its requests (``prepare``) has them built in the
caller's thread, in order, and only written by the streams; every point is written once, a settle
runs with nothing in flight, and a store without ``prepare`` is still upserted batch by batch."""

from __future__ import annotations

import gc
import threading
from typing import Any

import numpy as np

from embedline.tasks.config import QdrantParams
from embedline.tasks.memory import QUIET_GC_THRESHOLD
from embedline.tasks.vectorsets import lifecycle
from embedline.tasks.vectorsets.base import PointRecord


class _Store:
    max_parallel = 2

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.prepared: list[tuple[int, list[str]]] = []  # (thread, ids)
        self.written: list[tuple[int, list[str]]] = []
        self.in_flight = 0
        self.settled_in_flight: list[int] = []
        self.gc_threshold: list[int] = []

    def upsert(self, collection: str, points: list[PointRecord]) -> None:
        self.write_prepared(collection, self.prepare(points))

    def prepare(self, points: list[PointRecord]) -> list[str]:
        self.prepared.append((threading.get_ident(), [p.id for p in points]))
        self.gc_threshold.append(gc.get_threshold()[0])
        return [p.id for p in points]

    def write_prepared(self, collection: str, request: list[str]) -> None:
        with self.lock:
            self.in_flight += 1
        self.written.append((threading.get_ident(), request))
        with self.lock:
            self.in_flight -= 1

    def settle(self) -> None:
        self.settled_in_flight.append(self.in_flight)


class _PlainStore:
    max_parallel = 2

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def upsert(self, collection: str, points: list[PointRecord]) -> None:
        self.batches.append([p.id for p in points])


def _points(n: int) -> list[PointRecord]:
    return [PointRecord(id=f"p{i:03d}", vector=np.zeros(4, np.float32), size_hint=1) for i in range(n)]


def test_requests_are_built_in_the_callers_thread_and_written_by_the_streams() -> None:
    store, caller = _Store(), threading.get_ident()
    before = gc.get_threshold()
    n = lifecycle.write_points(store, "c", iter(_points(50)), params=QdrantParams(batch_points=4, parallel=2),
                               dims=4, settle=store.settle, settle_every=12)
    assert n == 50
    assert {t for t, _ in store.prepared} == {caller}  # all Python conversion on one thread
    assert [i for _, ids in store.prepared for i in ids] == [p.id for p in _points(50)]  # in order, once
    assert sorted(i for _, ids in store.written for i in ids) == [p.id for p in _points(50)]  # each written once
    assert {t for t, _ in store.written[1:]} - {caller}  # after the first batch, the streams write
    assert store.written[0][0] == caller  # the first batch alone, acknowledged before the rest
    assert store.settled_in_flight and set(store.settled_in_flight) == {0}
    assert min(store.gc_threshold) >= QUIET_GC_THRESHOLD  # few collections while the records are built
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_store_without_prepare_is_upserted_batch_by_batch() -> None:
    store = _PlainStore()
    assert lifecycle.write_points(store, "c", _points(10), params=QdrantParams(batch_points=3), dims=4) == 10
    assert sorted(len(b) for b in store.batches) == [1, 3, 3, 3]
    assert sorted(i for b in store.batches for i in b) == [p.id for p in _points(10)]


def test_quiet_gc_collects_cycles_and_restores_the_collector() -> None:
    import weakref

    from embedline.tasks.memory import quiet_gc

    class Node:
        ref: Any = None

    before = gc.get_threshold()
    try:
        with quiet_gc(threshold=1000):
            assert gc.get_threshold()[0] == max(1000, before[0]) and gc.get_freeze_count() > 0
            a = Node()
            a.ref = a  # a cycle made inside: still collected by the gen-0 passes that run
            alive = weakref.ref(a)
            del a
            junk = [[] for _ in range(5000)]  # container allocations past the threshold
            del junk
            assert alive() is None
            raise KeyError("boom")
    except KeyError:
        pass
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
