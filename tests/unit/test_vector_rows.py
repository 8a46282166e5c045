"""A few rows of a vector shard are read by decoding only the row groups that hold them (an
incremental upsert or its validation sample does not read whole shards); same vectors as a full read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from embedline.tasks.shards import ROW_GROUP_ROWS
from embedline.tasks.vector_shards import read_vector_rows, read_vector_shard, write_vector_shard


def test_rows_come_from_their_row_groups_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 2 * ROW_GROUP_ROWS + 17  # three row groups
    vecs = np.random.default_rng(1).random((n, 4), dtype=np.float32)
    path = write_vector_shard(tmp_path, 3, [f"c{i}" for i in range(n)], vecs, {"chunks": "x", "namespace": "n"})
    assert path is not None and pq.ParquetFile(path).metadata.num_row_groups == 3
    read: list[list[int]] = []
    real = pq.ParquetFile.read_row_groups

    def spy(self: pq.ParquetFile, groups: list[int], *a: object, **k: object) -> object:
        read.append(list(groups))
        return real(self, groups, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    rows = np.array([n - 1, 5, 2 * ROW_GROUP_ROWS, 7])  # any order, groups 0 and 2
    got = read_vector_rows(path, rows)
    assert read == [[0, 2]]
    assert np.array_equal(got, vecs[rows])
    everything = np.array([0, ROW_GROUP_ROWS, n - 1])
    assert np.array_equal(read_vector_rows(path, everything), read_vector_shard(path).vectors[everything])
