"""Row-range reads of the chunk shards (only the row groups and columns a range needs).

The chunks artifact is a shard folder (:mod:`embedline.tasks.shards`) or a single Parquet file;
rows are numbered across shards in shard order, the order every other stage reads them in.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from embedline.tasks.shards import shard_files, shard_index


class ChunkRows:
    """Random access by row range to the chunks, one row group at a time."""

    def __init__(self, path: str | Path, shards: tuple[int, ...] | None = None):
        """``shards``: only these chunk shards (by index), rows numbered across them; None: all."""
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} is missing: run the chunk stage first")
        files = shard_files(self.path)
        if shards is not None:
            keep = set(shards)
            files = [f for f in files if (shard_index(f) if self.path.is_dir() else 0) in keep]
        self.files = [pq.ParquetFile(f) for f in files]
        self.groups: list[tuple[int, int]] = []  # (file, row group) in row order
        self.starts = [0]
        for fi, f in enumerate(self.files):
            for g in range(f.metadata.num_row_groups):
                self.groups.append((fi, g))
                self.starts.append(self.starts[-1] + f.metadata.row_group(g).num_rows)
        self.num_rows = self.starts[-1]

    def read(self, start: int, stop: int, columns: list[str]) -> pa.Table:
        """Rows ``[start, stop)`` with ``columns`` (reads only the overlapping row groups)."""
        stop = min(stop, self.num_rows)
        if start >= stop:
            if self.files:
                return self.files[0].schema_arrow.empty_table().select(columns)
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        first = bisect.bisect_right(self.starts, start) - 1
        last = bisect.bisect_left(self.starts, stop) - 1
        parts = [self.files[fi].read_row_group(g, columns=columns) for fi, g in self.groups[first : last + 1]]
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        return table.slice(start - self.starts[first], stop - start)

    def iter_batches(self, columns: list[str], batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
        for f in self.files:
            yield from f.iter_batches(batch_size=batch_rows, columns=columns)
