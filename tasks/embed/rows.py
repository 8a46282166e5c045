"""Row-range reads of ``chunks.parquet`` (only the row groups and columns a shard needs)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class ChunkRows:
    """Random access by row range to a chunk Parquet file, one row group at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} is missing: run the chunk stage first")
        self.file = pq.ParquetFile(self.path)
        self.starts = [0]
        for i in range(self.file.metadata.num_row_groups):
            self.starts.append(self.starts[-1] + self.file.metadata.row_group(i).num_rows)
        self.num_rows = self.starts[-1]

    def read(self, start: int, stop: int, columns: list[str]) -> pa.Table:
        """Rows ``[start, stop)`` with ``columns`` (reads only the overlapping row groups)."""
        stop = min(stop, self.num_rows)
        if start >= stop:
            return self.file.schema_arrow.empty_table().select(columns)
        first = bisect.bisect_right(self.starts, start) - 1
        last = bisect.bisect_left(self.starts, stop) - 1
        groups = list(range(first, last + 1))
        table = self.file.read_row_groups(groups, columns=columns)
        return table.slice(start - self.starts[first], stop - start)

    def iter_batches(self, columns: list[str], batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
        yield from self.file.iter_batches(batch_size=batch_rows, columns=columns)
