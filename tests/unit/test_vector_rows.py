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


def test_a_text_is_kept_only_if_every_stale_shard_holding_it_has_it_in_its_own_old_shard(tmp_path: Path) -> None:
    """The embed stage skips the cache only for texts each rebuilt vector shard finds in its own
    previous version: a text new to one shard but old in another still goes through the cache."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedline.tasks.embed.stage import _kept_of
    from embedline.tasks.shards import shard_name

    chunks, vectors = tmp_path / "chunks", tmp_path / "vectors"
    chunks.mkdir()
    files = []
    for i, hashes in enumerate([["a", "b", "c"], ["b", "d"], ["e"]]):
        f = chunks / shard_name(i)
        pq.write_table(pa.table({"text_hash": pa.array(hashes, pa.string())}), f)
        files.append((i, f))
    old = {0: ["a", "b", "x"], 1: ["d"]}  # shard 1's old version lacks "b"; shard 2 has none

    def previous(path: Path, ns: str) -> pa.Array | None:
        assert ns == "ns" and path.parent == vectors
        held = old.get(int(path.stem.split("-")[1]))
        return None if held is None else pa.array(held, pa.string())

    assert sorted(_kept_of(files, vectors, "ns", previous).to_pylist()) == ["a", "d"]
    assert _kept_of(files, vectors, "ns", lambda *_: None).to_pylist() == []
