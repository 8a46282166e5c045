"""What a vector set is built from: the workspace's artifacts (deduped shards + vector shards).

The only module of the package that reads ``data/interim/deduped/`` and ``data/embeddings/vectors/``:
build, verify and promote go through it. Memory stays bounded by one shard, whatever the number of
points:

- :class:`SyncState` spills both sides of a sync to a temporary SQLite file: the desired
  ``point id -> payload hash`` (two columns of each deduped shard; the dedupe stage stored the hash)
  and the store's ``id -> payload hash`` (one scan). The diff (adds, updates, deletes) is a join
  that SQLite runs on disk; points to write come back grouped by shard.
- :func:`shard_points` builds the records of one slice of a shard (payloads only for the points
  written, vectors from the shard's vector file): at most ``WRITE_SLICE`` rows, however big a shard.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.payloads import PAYLOAD_HASH, build_payload, build_payloads
from embedline.tasks.shards import shard_files, shard_index
from embedline.tasks.vector_shards import (
    META_KEY,
    read_vector_rows,
    row_groups_of,
    vector_files,
)
from embedline.tasks.vectorsets.base import FieldRecord, FieldScan, PointRecord
from embedline.tasks.vectorsets.stores import VectorStore
from embedline.tasks.vectorsets.sync import VECTOR_JSON_BYTES

SCAN_BATCH = 2048
# rows of one shard turned into records at once on the diff path (bounded memory: SyncState.to_write)
WRITE_SLICE = 2048
Packer = Callable[..., list[dict[str, Any]]]  # ColumnPacking.pack_columns
_ROW_COLS = ["point_id", "row", "chunk_id", "doc_id", "source", "sources", "duplicates", "is_duplicate",
             "canonical_id", "text", "title", "chunk_index", "heading_path", "char_start", "char_end",
             "token_count", "text_hash", "metadata"]


def require_rows(art: Artifacts) -> None:
    """Fail clearly when the dedupe stage has not run."""
    if not art.deduped.exists():
        raise FileNotFoundError(f"{art.deduped} is missing: run the dedupe stage first")


def deduped_shards(art: Artifacts) -> list[tuple[int, Path]]:
    p = art.deduped
    return [(shard_index(f), f) for f in shard_files(p)] if p.is_dir() else [(0, f) for f in shard_files(p)]


def _recorded_for(path: Path, fingerprint: str, model: str) -> bool:
    md = pq.read_schema(path).metadata or {}
    raw = md.get(META_KEY)
    return raw is not None and json.loads(raw) == {"fingerprint": fingerprint, "model": model}


def desired_pairs(art: Artifacts, *, fingerprint: str, model: str) -> Iterator[tuple[str, str]]:
    """``(point id, payload hash)`` of every point the deduped shards describe (what
    :meth:`SyncState.of_artifacts` spills), one shard at a time: read from the artifacts, not back
    from the spill, so the record a sync leaves costs no more memory than a shard."""
    for _, path in deduped_shards(art):
        ids, hashes, _ = shard_hashes(path, fingerprint=fingerprint, model=model)
        yield from zip(ids, hashes, strict=True)


def shard_hashes(path: Path, *, fingerprint: str, model: str) -> tuple[list[str], list[str], list[int]]:
    """``(point ids, payload hashes, rows)`` of one deduped shard: two columns when the shard was
    written for this fingerprint and model, else every payload rebuilt."""
    if _recorded_for(path, fingerprint, model):
        t = pq.ParquetFile(path).read(columns=["point_id", PAYLOAD_HASH, "row"])
        return t["point_id"].to_pylist(), t[PAYLOAD_HASH].to_pylist(), t["row"].to_pylist()
    ids, hashes, rows = [], [], []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=SCAN_BATCH, columns=_ROW_COLS):
        for r in batch.to_pylist():
            ids.append(r["point_id"])
            hashes.append(build_payload(r, fingerprint=fingerprint, model=model)[PAYLOAD_HASH])
            rows.append(int(r["row"]))
    return ids, hashes, rows


class SyncState:
    """Desired and existing ``id -> payload hash`` of one sync, spilled to a temporary SQLite file."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="embedline-sync-")
        self.db = sqlite3.connect(Path(self._dir.name) / "sync.sqlite")
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-8192;"
            "CREATE TABLE desired (id TEXT PRIMARY KEY, hash TEXT, shard INTEGER, row INTEGER) WITHOUT ROWID;"
            "CREATE TABLE existing (id TEXT PRIMARY KEY, hash TEXT) WITHOUT ROWID;"
        )
        self.desired = 0
        self.whole_shards = False  # desired holds every row of its shards (of_artifacts)
        self.existing_recorded = False  # existing came from the store's record, not a scan

    @classmethod
    def of_artifacts(cls, art: Artifacts, *, fingerprint: str, model: str) -> SyncState:
        """The desired state of the workspace's deduped shards (read two columns per shard)."""
        state = cls()
        try:
            for index, path in deduped_shards(art):
                ids, hashes, rows = shard_hashes(path, fingerprint=fingerprint, model=model)
                state.add_desired(zip(ids, hashes, [index] * len(ids), rows, strict=True))
            state.whole_shards = True
        except sqlite3.IntegrityError as exc:
            state.close()
            raise ValueError(f"{art.deduped}: a point id appears twice (chunk ids must be unique)") from exc
        return state

    def add_desired(self, rows: Iterable[tuple[str, str, int, int]]) -> None:
        """``(point id, payload hash, shard, row)`` of desired points."""
        self.db.executemany("INSERT INTO desired VALUES (?, ?, ?, ?)", rows)
        self.db.commit()
        self.desired = self._count("SELECT COUNT(*) FROM desired")

    def add_existing(self, rows: Iterable[tuple[str, str | None]]) -> None:
        """``(point id, payload hash or None)`` of points the store holds."""
        self.db.executemany("INSERT OR REPLACE INTO existing VALUES (?, ?)", rows)
        self.db.commit()

    def scan_store(self, store: VectorStore, collection: str, *, recorded: bool = False) -> None:
        """Spill the store's ``id -> payload hash`` (an existing point without a hash is stale).
        ``recorded``: take it from what the last sync recorded, when the store kept a record that
        no write has invalidated since (Edge: :meth:`~embedline.tasks.vectorsets.edge.EdgeStore.recorded_field`),
        instead of reading every point's payload; ``embedline verify`` always scans."""
        self.db.execute("DELETE FROM existing")
        self.existing_recorded = False
        if store.describe(collection) is not None:
            pairs = store.recorded_field(collection, PAYLOAD_HASH) if recorded and isinstance(store, FieldRecord) else None
            if pairs is not None:
                self.add_existing(pairs)
                self.existing_recorded = True
            elif isinstance(store, FieldScan):  # a store's cheap (id, field) scan (Edge)
                self.add_existing(store.scan_field(collection, PAYLOAD_HASH, batch=SCAN_BATCH))
            else:
                self.add_existing((p.id, (p.payload or {}).get(PAYLOAD_HASH))
                                  for p in store.scan(collection, with_payload=[PAYLOAD_HASH], batch=SCAN_BATCH))
        self.db.commit()

    def _count(self, sql: str) -> int:
        return int(self.db.execute(sql).fetchone()[0])

    # ---- the diff (SQL over the two tables) --------------------------------------------------
    _ADDS = "SELECT d.id FROM desired d LEFT JOIN existing e ON e.id = d.id WHERE e.id IS NULL"
    _UPDATES = "SELECT d.id FROM desired d JOIN existing e ON e.id = d.id WHERE e.hash IS NOT d.hash"
    _DELETES = "SELECT e.id FROM existing e LEFT JOIN desired d ON d.id = e.id WHERE d.id IS NULL"

    def counts(self) -> dict[str, int]:
        return {
            "adds": self._count(f"SELECT COUNT(*) FROM ({self._ADDS})"),
            "updates": self._count(f"SELECT COUNT(*) FROM ({self._UPDATES})"),
            "deletes": self._count(f"SELECT COUNT(*) FROM ({self._DELETES})"),
            "existing": self._count("SELECT COUNT(*) FROM existing"),
            "desired": self.desired,
        }

    def ids(self, kind: str, limit: int | None = None) -> Iterator[str]:
        """Sorted ids of ``adds`` / ``updates`` / ``deletes`` (streamed)."""
        sql = {"adds": self._ADDS, "updates": self._UPDATES, "deletes": self._DELETES}[kind]
        sql = f"SELECT id FROM ({sql}) ORDER BY id" + (f" LIMIT {int(limit)}" if limit is not None else "")
        for (pid,) in self.db.execute(sql):
            yield pid

    def to_write(self, everything: bool = False, max_rows: int = WRITE_SLICE
                 ) -> Iterator[tuple[int, list[int] | None]]:
        """``(shard, rows)`` of the points to upsert (adds + updates, or all with ``everything``);
        rows None: every row of the shard (the desired state holds whole shards and everything is
        written, or the store holds none of these points: no join and no sort of every desired row).
        Otherwise at most ``max_rows`` rows at a time: the records of one slice are what the upsert
        holds in Python, so a slice, not a shard (which grows with the corpus), bounds it."""
        if self.whole_shards and (everything or not self._count("SELECT EXISTS (SELECT 1 FROM existing)")):
            for (shard,) in self.db.execute("SELECT DISTINCT shard FROM desired ORDER BY shard").fetchall():
                yield int(shard), None
            return
        where = "" if everything else "WHERE e.id IS NULL OR e.hash IS NOT d.hash"
        sql = (f"SELECT d.shard, d.row FROM desired d LEFT JOIN existing e ON e.id = d.id {where} "
               "ORDER BY d.shard, d.row")
        current = -1
        rows: list[int] = []
        for shard, row in self.db.execute(sql):
            if rows and (shard != current or len(rows) >= max_rows):
                yield current, rows
                rows = []
            current = int(shard)
            rows.append(int(row))
        if rows:
            yield current, rows

    def hashes_of(self, ids: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        """``id -> (payload hash, shard, row)`` of desired points among ``ids``."""
        out: dict[str, tuple[str, int, int]] = {}
        ids = list(ids)
        for s in range(0, len(ids), 500):
            part = ids[s : s + 500]
            q = f"SELECT id, hash, shard, row FROM desired WHERE id IN ({','.join('?' * len(part))})"
            out.update({pid: (h, sh, r) for pid, h, sh, r in self.db.execute(q, part)})
        return out

    def sample(self, k: int) -> list[str]:
        """A deterministic, evenly spread sample of ``k`` desired ids (sorted order), in one pass."""
        n = self.desired
        if k <= 0 or not n:
            return []
        picks = set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist())
        return [pid for i, (pid,) in enumerate(self.db.execute("SELECT id FROM desired ORDER BY id")) if i in picks]

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()

    def __enter__(self) -> SyncState:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def _deduped_rows(path: Path, rows: list[int] | None, columns: list[str]) -> pa.Table:
    """``columns`` of the deduped rows whose ``row`` is in ``rows`` (None: all), decoding only the
    row groups that hold them."""
    pf = pq.ParquetFile(path)
    if rows is None or len(rows) >= pf.metadata.num_rows:
        return pf.read(columns=columns, use_threads=False)
    want = pa.array(rows, pa.int64())
    at = np.flatnonzero(pc.is_in(pf.read(columns=["row"])["row"], value_set=want).to_numpy(zero_copy_only=False))
    groups, _ = row_groups_of(pf, at)
    table = pf.read_row_groups(groups, columns=columns, use_threads=False)
    return table.filter(pc.is_in(table["row"], value_set=want))


def shard_slices(art: Artifacts, index: int, rows: list[int] | None, max_rows: int | None = None
                 ) -> Iterator[list[int]]:
    """``rows`` of deduped shard ``index`` (None: all of them, in file order) in slices of at most
    ``max_rows``: the records of one slice, not of a whole shard (which grows with the corpus),
    are what the upsert holds in Python."""
    if rows is None:
        path = dict(deduped_shards(art))[index]
        rows = pq.ParquetFile(path).read(columns=["row"]).column("row").to_pylist()
    max_rows = max_rows or WRITE_SLICE
    for s in range(0, len(rows), max_rows):
        yield rows[s : s + max_rows]


def shard_points(
    art: Artifacts, index: int, rows: list[int] | None, *, fingerprint: str, model: str, dims: int,
    packer: Packer | None = None,
) -> list[PointRecord]:
    """The records (id, vector, payload) of ``rows`` (None: all) of deduped shard ``index``.
    Vectorised where it can be: one row filter, the vectors read row group by row group, the
    payload hash the dedupe stage recorded (rebuilt only when the shard was written for another
    fingerprint). ``packer``: the store's own payload layout built column-wise (records ``packed``)."""
    path = dict(deduped_shards(art))[index]
    recorded = _recorded_for(path, fingerprint, model)
    table = _deduped_rows(path, rows, [*_ROW_COLS, PAYLOAD_HASH] if recorded else _ROW_COLS)
    vf = vector_files(art.vectors).get(index)
    if vf is None:
        raise FileNotFoundError(f"{art.vectors} has no shard {index}: re-run the embed stage")
    wanted = table["row"].to_numpy()
    vectors = read_vector_rows(vf, wanted)
    if vectors.shape[1] != dims:
        raise ValueError(f"{vf} holds {vectors.shape[1]}-d vectors; the manifest says dims={dims}")
    # numpy rows: the store converts them when it builds a request (Edge: an ``array('f')`` per row)
    rows_out = list(vectors)
    # request bytes without serialising each payload: its raw text fields + the vector as JSON text
    sizes = (pc.binary_length(table["text"]).to_numpy(zero_copy_only=False)
             + pc.binary_length(table["sources"]).to_numpy(zero_copy_only=False)
             + pc.binary_length(table["duplicates"]).to_numpy(zero_copy_only=False)
             + pc.binary_length(table["metadata"]).to_numpy(zero_copy_only=False)
             + dims * VECTOR_JSON_BYTES + 1024).tolist()
    cols = table.to_pydict()
    known = cols.get(PAYLOAD_HASH)
    if packer is not None and known is not None:
        packed = packer(cols, fingerprint=fingerprint, model=model, known_hashes=known)
        return [
            PointRecord(id=pid, vector=vec, payload=payload, size_hint=size, packed=True)  # type: ignore[arg-type]
            for pid, vec, payload, size in zip(cols["point_id"], rows_out, packed, sizes, strict=True)
        ]
    payloads = build_payloads(cols, fingerprint=fingerprint, model=model, known_hashes=known)
    return [
        PointRecord(id=pid, vector=vec, payload=payload, size_hint=size)  # type: ignore[arg-type]
        for pid, vec, payload, size in zip(cols["point_id"], rows_out, payloads, sizes, strict=True)
    ]


def sample_vectors(art: Artifacts, state: SyncState, ids: list[str]) -> dict[str, tuple[np.ndarray, str]]:
    """``id -> (vector, payload hash)`` of sampled desired points (for the read-back validation)."""
    where = state.hashes_of(ids)
    by_shard: dict[int, list[tuple[str, int]]] = {}
    for pid, (_, shard, row) in where.items():
        by_shard.setdefault(shard, []).append((pid, row))
    files = vector_files(art.vectors)
    out: dict[str, tuple[np.ndarray, str]] = {}
    for shard, picks in by_shard.items():
        vectors = read_vector_rows(files[shard], np.asarray([row for _, row in picks], dtype=np.int64))
        out.update({pid: (np.array(vectors[k]), where[pid][0]) for k, (pid, _) in enumerate(picks)})
    return {pid: out[pid] for pid in ids if pid in out}
