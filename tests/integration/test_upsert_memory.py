"""The upsert's memory does not grow with the points it writes (issue 12, bounded memory): the
store's written pages are given back between requests (asserted on the kernel's count of the
store's resident mapped bytes, not on timings), and the collection is the same as without."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from embedline.tasks.memory import resident_mapped
from embedline.tasks.vectorsets import lifecycle
from embedline.tasks.vectorsets.edge import EdgeStore
from embedline.tasks.vectorsets.verify import verify
from tests.integration.test_upsert import CORPUS_A, _ingest, _project, _state

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="procfs and madvise: Linux")]


def test_upsert_gives_the_store_pages_back_between_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, art = _project(tmp_path / "a", CORPUS_A, **{"qdrant.batch_points": 2, "qdrant.parallel": 2})
    in_flight, writes, lock, seen = [0], [0], threading.Lock(), []
    write, release = EdgeStore.write_prepared, EdgeStore.release_pages

    def counted_write(self: EdgeStore, collection: str, request: Any) -> None:  # what the streams run
        with lock:
            in_flight[0] += 1
            writes[0] += 1
        try:
            write(self, collection, request)
        finally:
            with lock:
                in_flight[0] -= 1

    def spied_release(self: EdgeStore) -> None:
        assert in_flight[0] == 0  # never while a request is being written
        before = resident_mapped(self.root)
        release(self)
        seen.append((before, resident_mapped(self.root)))

    monkeypatch.setattr(lifecycle, "SETTLE_POINTS", 4)
    monkeypatch.setattr(EdgeStore, "write_prepared", counted_write)
    monkeypatch.setattr(EdgeStore, "release_pages", spied_release)
    up = _ingest(cfg, art)["upsert"]
    assert up["added"] > 12 and len(seen) >= up["added"] // 4 - 1
    assert writes[0] >= up["added"] // 2  # every request went through the spied write
    assert all(before > 0 for before, _ in seen)  # the writes had mapped pages in...
    assert all(after == 0 for _, after in seen)  # ...and none stayed resident after the release
    assert verify(cfg, art).ok

    monkeypatch.undo()
    cfg2, art2 = _project(tmp_path / "b", CORPUS_A)  # the default: no release before 8,192 points
    _ingest(cfg2, art2)
    assert _state(cfg2, art2) == _state(cfg, art)


def test_first_ingest_builds_records_one_slice_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first ingest writes whole shards (no diff), yet its records are built ``WRITE_SLICE`` rows
    at a time: a shard grows with the corpus, a slice does not. Same collection as one slice a shard."""
    from embedline.tasks.vectorsets import build, source

    cfg, art = _project(tmp_path / "a", CORPUS_A)
    asked: list[int] = []
    real = build.shard_points

    def spied(art: Any, index: int, rows: Any, **kw: Any) -> Any:
        asked.append(len(rows))  # never None: never a whole shard at once
        return real(art, index, rows, **kw)

    monkeypatch.setattr(source, "WRITE_SLICE", 3)
    monkeypatch.setattr(build, "shard_points", spied)
    up = _ingest(cfg, art)["upsert"]
    assert up["added"] > 6 and max(asked) <= 3 and sum(asked) == up["added"]

    monkeypatch.undo()
    cfg2, art2 = _project(tmp_path / "b", CORPUS_A)
    _ingest(cfg2, art2)
    assert _state(cfg2, art2) == _state(cfg, art)
