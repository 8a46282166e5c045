"""The sync plan is a pure diff; batching respects point and byte caps; payload hashes are stable."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedline.tasks.vectorsets.stores import PointRecord
from embedline.tasks.vectorsets.sync import (
    PAYLOAD_HASH,
    batched,
    build_payload,
    compute_plan,
    payload_hash,
    point_bytes,
    sample_ids,
)

pytestmark = pytest.mark.unit


def test_plan_adds_updates_deletes_unchanged() -> None:
    desired = {"a": "1", "b": "2", "c": "3", "d": "4"}
    existing = {"b": "2", "c": "old", "e": "5", "f": None, "d": None}
    plan = compute_plan(desired, existing)
    assert plan.adds == ("a",)
    assert plan.updates == ("c", "d")  # hash differs, or the stored point has no hash (stale)
    assert plan.deletes == ("e", "f")
    assert plan.unchanged == 1
    assert plan.existing == 5 and plan.desired == 4
    assert plan.delete_fraction == pytest.approx(2 / 5)
    assert plan.changes == 5
    counts = plan.counts()
    assert counts["adds"] == 1 and counts["deletes"] == 2 and counts["unchanged"] == 1


def test_plan_empty_store_and_empty_corpus() -> None:
    p = compute_plan({"a": "1"}, {})
    assert p.adds == ("a",) and p.delete_fraction == 0.0
    q = compute_plan({}, {"a": "1", "b": "2"})
    assert q.deletes == ("a", "b") and q.delete_fraction == 1.0 and q.unchanged == 0


hashes = st.dictionaries(st.text("abcdef", min_size=1, max_size=3), st.sampled_from(["h1", "h2", "h3"]), max_size=30)


@given(desired=hashes, existing=hashes)
def test_applying_the_plan_reaches_desired_and_is_then_a_noop(desired: dict, existing: dict) -> None:
    plan = compute_plan(desired, existing)
    store = dict(existing)
    for k in plan.adds + plan.updates:
        store[k] = desired[k]
    for k in plan.deletes:
        del store[k]
    assert store == desired
    again = compute_plan(desired, store)
    assert again.changes == 0 and again.unchanged == len(desired)
    assert set(plan.adds).isdisjoint(plan.updates)
    assert len(plan.adds) + len(plan.updates) + plan.unchanged == len(desired)


def _row(**kw: object) -> dict:
    row = {
        "text": "hello", "source": "a.md", "sources": '[{"source": "a.md"}]', "doc_id": "d", "chunk_id": "c",
        "chunk_index": 0, "title": "A", "heading_path": ["H"], "char_start": 0, "char_end": 5,
        "token_count": 1, "text_hash": "th", "duplicates": "[]", "is_duplicate": False, "canonical_id": "c",
        "metadata": "{}",
    }
    row.update(kw)
    return row


def test_payload_hash_covers_every_field_but_itself() -> None:
    base = build_payload(_row(), fingerprint="fp", model="m")
    assert base[PAYLOAD_HASH] == payload_hash(base)
    assert base["sources"] == [{"source": "a.md"}] and base["heading_path"] == ["H"]
    assert "metadata" not in base
    assert build_payload(_row(), fingerprint="fp", model="m")[PAYLOAD_HASH] == base[PAYLOAD_HASH]
    for change in ({"text": "hello!"}, {"sources": "[]"}, {"chunk_index": 1}, {"metadata": '{"k": 1}'},
                   {"duplicates": '[{"chunk_id": "x"}]'}, {"is_duplicate": True}):
        assert build_payload(_row(**change), fingerprint="fp", model="m")[PAYLOAD_HASH] != base[PAYLOAD_HASH]
    assert build_payload(_row(), fingerprint="fp2", model="m")[PAYLOAD_HASH] != base[PAYLOAD_HASH]


def _pts(n: int, text_len: int = 10) -> list[PointRecord]:
    v = np.zeros(4, np.float32)
    return [PointRecord(id=str(i), vector=v, payload={"text": "x" * text_len}) for i in range(n)]


def test_batches_cap_points_and_bytes_and_keep_order() -> None:
    pts = _pts(10)
    out = list(batched(pts, max_points=3, max_bytes=10**9, dims=4))
    assert [len(b) for b in out] == [3, 3, 3, 1]
    assert [p.id for b in out for p in b] == [p.id for p in pts]
    one = point_bytes(pts[0].payload or {}, 4)
    by_bytes = list(batched(pts, max_points=100, max_bytes=one * 4, dims=4))
    assert [len(b) for b in by_bytes] == [4, 4, 2]
    assert all(sum(point_bytes(p.payload or {}, 4) for p in b) <= one * 4 for b in by_bytes)
    big = _pts(3, text_len=5000)
    assert [len(b) for b in batched(big, max_points=100, max_bytes=100, dims=4)] == [1, 1, 1]


def test_sample_ids_is_deterministic_and_spread() -> None:
    ids = [f"{i:03d}" for i in range(100)]
    s = sample_ids(list(reversed(ids)), 5)
    assert s == sample_ids(ids, 5) == ["000", "025", "050", "074", "099"]
    assert sample_ids(ids, 0) == [] and sample_ids(ids[:3], 10) == ids[:3]


def test_disk_diff_equals_the_pure_plan() -> None:
    """The upsert's on-disk diff (SQLite join) gives what compute_plan gives on the same maps,
    including points the store holds without a hash (stale) and the write order by shard."""
    import random

    from embedline.tasks.vectorsets.source import SyncState

    rng = random.Random(7)
    ids = [f"{i:04d}" for i in range(400)]
    desired = {i: f"h{rng.randrange(3)}" for i in ids[:300]}
    existing: dict[str, str | None] = {i: rng.choice([f"h{rng.randrange(3)}", None]) for i in ids[150:]}
    where = {pid: (rng.randrange(4), k) for k, pid in enumerate(desired)}
    with SyncState() as state:
        state.add_desired((pid, h, *where[pid]) for pid, h in desired.items())
        state.add_existing(existing.items())
        plan = compute_plan(desired, existing)
        assert tuple(state.ids("adds")) == plan.adds
        assert tuple(state.ids("updates")) == plan.updates
        assert tuple(state.ids("deletes")) == plan.deletes
        c = state.counts()
        assert (c["adds"], c["updates"], c["deletes"], c["existing"], c["desired"]) == (
            len(plan.adds), len(plan.updates), len(plan.deletes), plan.existing, plan.desired)
        batches = list(state.to_write())
        assert [s for s, _ in batches] == sorted({where[p][0] for p in (*plan.adds, *plan.updates)})
        written = {(s, r) for s, rows in batches for r in rows}
        assert written == {where[p] for p in (*plan.adds, *plan.updates)}
        assert sum(len(r) for _, r in state.to_write(everything=True)) == len(desired)
        assert state.sample(5) == sample_ids(list(desired), 5)


def test_columnar_payloads_equal_row_payloads() -> None:
    """The upsert builds payloads a column batch at a time: same payloads, same hashes as row by row."""
    from embedline.tasks.payloads import build_payloads

    rows = [_row(), _row(sources='[{"source": "b.md", "match": "near", "similarity": 0.97}]', duplicates=None,
                     metadata='{"lang": "en"}', heading_path=None, is_duplicate=True)]
    cols = {k: [r.get(k) for r in rows] for k in rows[0]}
    cols["point_id"] = ["p1", "p2"]
    assert build_payloads(cols, fingerprint="fp", model="m") == [
        build_payload(r, fingerprint="fp", model="m") for r in rows]
    known = build_payloads(cols, fingerprint="fp", model="m", known_hashes=["h1", None])
    assert known[0][PAYLOAD_HASH] == "h1" and known[1] == build_payload(rows[1], fingerprint="fp", model="m")


def test_points_to_write_come_in_bounded_slices() -> None:
    """The upsert builds records (~16 KB of Python objects a point) one slice at a time: a shard
    bigger than ``WRITE_SLICE`` rows (a shard grows with the corpus) comes in several slices, each
    within one shard, together every row once, in shard/row order."""
    from embedline.tasks.vectorsets.source import WRITE_SLICE, SyncState

    sizes = {0: 5, 1: 2 * WRITE_SLICE + 3, 2: WRITE_SLICE}
    rows = [(f"{s}-{r:06d}", "h", s, r) for s, n in sizes.items() for r in range(n)]
    with SyncState() as state:
        state.add_desired(rows)
        slices = list(state.to_write())
        assert max(len(r) for _, r in slices) == WRITE_SLICE
        assert [(s, len(r)) for s, r in slices] == [(0, 5), (1, WRITE_SLICE), (1, WRITE_SLICE), (1, 3),
                                                    (2, WRITE_SLICE)]
        assert [(s, r) for s, part in slices for r in part] == [(s, r) for _, _, s, r in rows]
        assert [len(r) for _, r in state.to_write(max_rows=4)][:3] == [4, 1, 4]


def test_packed_columns_equal_packed_payloads() -> None:
    """The Edge write path packs a column batch in one pass: the very dicts (key order and packed
    JSON text included) that packing each built payload gives, and the general path for a row
    without a recorded hash."""
    from embedline.tasks.payloads import build_payloads
    from embedline.tasks.vectorsets.edge_schema import pack_columns, pack_payload

    rows = [_row(text="é \u2028 \ud800"),  # a lone surrogate: the packed text falls back to json
            _row(sources='[{"source": "b.md", "match": "near", "similarity": 0.97}]', duplicates=None,
                 metadata='{"lang": "en", "n": 3}', heading_path=None, is_duplicate=True, text="é \u2028"),
            _row(metadata="", title=None, text="x" * 3000)]
    cols = {k: [r.get(k) for r in rows] for k in rows[0]}
    known = ["h1", None, "h3"]
    want = [pack_payload(p) for p in build_payloads(cols, fingerprint="fp", model="m", known_hashes=known)]
    got = pack_columns(cols, fingerprint="fp", model="m", known_hashes=known)
    assert got == want
    assert [list(g) for g in got] == [list(w) for w in want]  # key order
    assert [g["_packed"] for g in got] == [w["_packed"] for w in want]  # byte-identical JSON text
