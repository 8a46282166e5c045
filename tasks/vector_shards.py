"""Sharded vectors: ``data/embeddings/vectors/shard-NNNNN.parquet``, one file per chunk shard.

A vector shard holds the vectors of one chunk shard, row-aligned with it (row ``i`` is the vector
of the chunk shard's row ``i``), with the chunk ids they belong to: columns ``chunk_id``,
``text_hash`` (the embedded text's key, so the next build of the shard takes the vectors of
unchanged texts from here instead of the cache) and ``vector`` (a fixed-size list of float32). Its schema metadata records what it was built from
(the SHA-256 of the chunk shard's bytes and the embedding namespace), so a run rewrites only the
shards whose chunk shard changed; the others stay byte-identical (and DVC does not re-hash them).
Files are written atomically and deterministically (no compression: float32 does not compress;
one row-group size), so the same inputs give the same bytes on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedline.tasks.shards import (
    ROW_GROUP_ROWS,
    SHARD_PREFIX,
    shard_files,
    shard_index,
    shard_name,
)

META_KEY = b"embedline"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (what a vector or deduped shard records it was built from)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_shards(path: str | Path) -> list[tuple[int, Path]]:
    """``(shard index, file)`` of a sharded artifact; a single Parquet file is shard 0."""
    p = Path(path)
    files = shard_files(p)
    if p.is_dir():
        return [(shard_index(f), f) for f in files]
    return [(0, f) for f in files]


def write_vector_shard(
    folder: Path,
    index: int,
    chunk_ids: pa.Array | list[str],
    vectors: np.ndarray,
    meta: dict[str, str],
    text_hashes: pa.Array | list[str] | None = None,
) -> Path | None:
    """Write one vector shard atomically; an empty shard removes the file. Returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / shard_name(index)
    n = len(chunk_ids)
    if n == 0:
        path.unlink(missing_ok=True)
        return None
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"vector shard {index}: {arr.shape} vectors for {n} chunk ids")
    dims = int(arr.shape[1])
    flat = pa.array(arr.reshape(-1), type=pa.float32())
    cols = {"chunk_id": _strings(chunk_ids)}
    if text_hashes is not None:
        cols["text_hash"] = _strings(text_hashes)
    cols["vector"] = pa.FixedSizeListArray.from_arrays(flat, dims)
    table = pa.table(cols).replace_schema_metadata({META_KEY: json.dumps({**meta, "dims": dims}, sort_keys=True)})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="none", row_group_size=ROW_GROUP_ROWS, use_dictionary=False)
    os.replace(tmp, path)
    return path


def _strings(values: pa.Array | pa.ChunkedArray | list[str]) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(values, pa.string())


def _reusable(path: Path, namespace: str) -> pq.ParquetFile | None:
    """The vector shard at ``path`` if it was built for ``namespace`` and records its texts' hashes."""
    if not path.exists() or shard_meta(path).get("namespace") != namespace:
        return None
    pf = pq.ParquetFile(path)
    return pf if "text_hash" in pf.schema_arrow.names else None


def reusable_vectors(path: Path, namespace: str) -> tuple[pa.Array, np.ndarray] | None:
    """``(text hashes, vectors)`` of the vector shard at ``path`` when it was built for
    ``namespace`` and records its texts' hashes (None otherwise): the vectors a rebuild of that
    shard can keep for its unchanged texts without asking the cache."""
    pf = _reusable(path, namespace)
    if pf is None:
        return None
    table = pf.read(columns=["text_hash", "vector"])
    return table.column("text_hash").combine_chunks(), _vectors(table)


def reusable_hashes(path: Path, namespace: str) -> pa.Array | None:
    """The text hashes of :func:`reusable_vectors` (no vector is read); None when there are none."""
    pf = _reusable(path, namespace)
    return None if pf is None else pf.read(columns=["text_hash"]).column(0).combine_chunks()


def shard_meta(path: Path) -> dict[str, str]:
    """The build record of a vector (or deduped) shard ({} when absent or unreadable)."""
    try:
        md = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return {}
    raw = md.get(META_KEY)
    return json.loads(raw) if raw else {}


@dataclass(frozen=True)
class VectorShard:
    index: int
    chunk_ids: list[str]
    vectors: np.ndarray  # (rows, dims) float32


def _floats(values: pa.Array) -> np.ndarray:
    """A float32 Arrow array as numpy, zero-copy (``Array.to_numpy`` imports pandas: ~1 s of CPU
    in a process that needs none)."""
    if values.null_count or values.type != pa.float32():
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
    return np.frombuffer(values.buffers()[1], dtype=np.float32, count=len(values), offset=values.offset * 4)


def _vectors(table: pa.Table) -> np.ndarray:
    """The ``vector`` column of a vector shard table as a (rows, dims) float32 array."""
    col = table.column("vector").combine_chunks()
    dims = col.type.list_size
    return _floats(col.values).reshape(-1, dims) if len(col) else np.zeros((0, dims), np.float32)


def read_vector_shard(path: Path, index: int | None = None, *, ids: bool = True) -> VectorShard:
    cols = ["chunk_id", "vector"] if ids else ["vector"]
    table = pq.ParquetFile(path).read(columns=cols)
    vecs = _vectors(table)
    chunk_ids = table.column("chunk_id").to_pylist() if ids else []
    return VectorShard(shard_index(path) if index is None else index, chunk_ids, vecs)


def row_groups_of(pf: pq.ParquetFile, positions: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The row groups of a Parquet file that hold the given file rows, and each group's first row."""
    md = pf.metadata
    sizes = np.asarray([md.row_group(i).num_rows for i in range(md.num_row_groups)], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    groups = np.unique(np.searchsorted(starts, np.asarray(positions, dtype=np.int64), side="right") - 1)
    return groups.tolist(), starts


def read_vector_rows(path: Path, rows: np.ndarray) -> np.ndarray:
    """The vectors of the given rows of a vector shard (in that order), decoding only the row
    groups that hold them (a few updated points do not read a whole shard)."""
    rows = np.asarray(rows, dtype=np.int64)
    pf = pq.ParquetFile(path)
    groups, starts = row_groups_of(pf, rows)
    if len(groups) == pf.metadata.num_row_groups:
        return read_vector_shard(path, ids=False).vectors[rows]
    vecs = _vectors(pf.read_row_groups(groups, columns=["vector"]))
    held = np.concatenate([np.arange(starts[g], starts[g] + pf.metadata.row_group(g).num_rows) for g in groups])
    return vecs[np.searchsorted(held, rows)]


def vector_files(folder: str | Path) -> dict[int, Path]:
    p = Path(folder)
    return {shard_index(f): f for f in shard_files(p)} if p.is_dir() else {}


def iter_vector_shards(folder: str | Path) -> Iterator[VectorShard]:
    """Every vector shard in shard order, one in memory at a time."""
    for index, f in sorted(vector_files(folder).items()):
        yield read_vector_shard(f, index)


def count_vectors(folder: str | Path) -> int:
    return sum(int(pq.ParquetFile(f).metadata.num_rows) for f in vector_files(folder).values())


def dims_of(folder: str | Path) -> int | None:
    for f in vector_files(folder).values():
        return int(pq.read_schema(f).field("vector").type.list_size)
    return None


def remove_stale(folder: Path, keep: set[int]) -> list[int]:
    """Delete shard files (and leftover temp files) whose index is not in ``keep``."""
    removed = []
    for index, f in vector_files(folder).items():
        if index not in keep:
            f.unlink()
            removed.append(index)
    if folder.is_dir():
        for tmp in folder.glob(f"{SHARD_PREFIX}*.tmp"):
            tmp.unlink(missing_ok=True)
    return sorted(removed)


def read_all(folder: str | Path) -> np.ndarray:
    """Every vector in shard order as one array (small sets only: tests, tools, benchmarks)."""
    parts = [s.vectors for s in iter_vector_shards(folder)]
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, dims_of(folder) or 0), np.float32)
