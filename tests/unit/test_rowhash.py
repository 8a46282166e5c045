"""Row keys of the incremental dedupe: column-wise, deterministic, and changed by any change of any
value (the key is what tells an unchanged row from an edited one)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from embedline.tasks.rowhash import row_keys


def _table() -> pa.Table:
    return pa.table({
        "chunk_id": pa.array(["a", "b", "c", "d", "e"]),
        "text": pa.array(["hello", "", None, "héllo wörld", "hello"], pa.large_string()),
        "title": pa.array([None, "T", "T", "", None]),
        "chunk_index": pa.array([0, 1, None, 3, 0], pa.int32()),
        "heading_path": pa.array([["H"], [], None, ["A", "B"], ["H"]], pa.list_(pa.string())),
        "flag": pa.array([True, False, None, True, True]),
    })


def _vectors(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).random((n, 8), dtype=np.float32)


def test_keys_are_deterministic_and_distinct_per_distinct_row() -> None:
    t, v = _table(), _vectors()
    keys = row_keys(t, v)
    assert keys.dtype == np.uint64 and len(keys) == 5
    assert np.array_equal(keys, row_keys(t, v.copy()))
    assert len(set(keys.tolist())) == 5
    # batches of the same rows give the same keys as the whole table
    assert np.array_equal(np.concatenate([row_keys(t.slice(0, 2), v[:2]), row_keys(t.slice(2), v[2:])]), keys)


def test_any_changed_value_changes_only_its_row_key() -> None:
    t, v = _table(), _vectors()
    base = row_keys(t, v)
    edits = {
        "text": pa.array(["hellO", "", None, "héllo wörld", "hello"], pa.large_string()),
        "title": pa.array(["", "T", "T", "", None]),  # null -> ""
        "chunk_index": pa.array([1, 1, None, 3, 0], pa.int32()),
        "heading_path": pa.array([["H", ""], [], None, ["A", "B"], ["H"]], pa.list_(pa.string())),
        "flag": pa.array([False, False, None, True, True]),
        "chunk_id": pa.array(["b", "b", "c", "d", "e"]),
    }
    for name, col in edits.items():
        changed = row_keys(t.set_column(t.schema.get_field_index(name), name, col), v)
        assert changed[0] != base[0], name
        assert np.array_equal(changed[1:], base[1:]), name
    w = v.copy()
    w[0, 3] = np.nextafter(w[0, 3], np.float32(2))  # one ulp of one component
    assert row_keys(t, w)[0] != base[0] and np.array_equal(row_keys(t, w)[1:], base[1:])


def test_bytes_moving_between_columns_change_the_key() -> None:
    a = pa.table({"x": ["ab"], "y": ["c"]})
    b = pa.table({"x": ["a"], "y": ["bc"]})
    c = pa.table({"x": ["ba"], "y": ["c"]})
    assert len({int(row_keys(a)[0]), int(row_keys(b)[0]), int(row_keys(c)[0])}) == 3


def test_lists_with_null_elements_keep_their_other_elements() -> None:
    t = pa.table({"h": pa.array([[None, "a"], [None, "b"], [None], []], pa.list_(pa.string()))})
    assert len(set(row_keys(t).tolist())) == 4
