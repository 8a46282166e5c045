"""Per-file and per-document state that lets a run do only what changed.

Two ledgers, one per stage that owns them (a DVC output has exactly one writer):

- **File ledger** (``data/interim/ledger.parquet``, preprocess): one row per source file: path,
  size, mtime (ns), content hash of the file bytes, the ids and content hashes of the documents it
  produced and the rejections it raised. A run stats every file, hashes only files whose size or
  mtime changed, and loads only files whose bytes changed.
- **Chunk ledger** (``data/interim/chunk_ledger.parquet``, chunk): one row per document: doc id,
  the hash of everything the chunker reads from it, and its chunk ids. A run re-chunks only
  documents whose hash changed.

Each ledger carries, in its Parquet schema metadata, a format version, the fingerprint of the
params *and code* its stage depends on (a change invalidates every row: a chunk param re-chunks
all, a preprocess param re-loads all, nothing else does), the shard count and the name -> size of
every shard file it wrote. A ledger whose fingerprint or shard files do not match is ignored (a
full rebuild), so a deleted or hand-edited artifact can never be silently reused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from embedline.tasks.config import stable_hash
from embedline.tasks.shards import shard_of, shard_sizes

log = logging.getLogger(__name__)
LEDGER_VERSION = 1
_PKG = Path(__file__).resolve().parent


@functools.cache
def code_fingerprint(*relpaths: str) -> str:
    """sha256 over the source bytes of ``tasks/`` modules or packages (a code change = new state).
    Once per process: the code a process runs is the code it imported (the chunk stage asked for
    it per shard and per document, 81 reads of its sources for the sample corpus)."""
    h = hashlib.sha256()
    for rel in relpaths:
        p = _PKG / rel
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(f.relative_to(_PKG).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:32]


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class FileEntry:
    """What one source file produced the last time its bytes were loaded."""

    path: str
    size: int
    mtime_ns: int
    file_hash: str
    doc_ids: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()  # loader name of each document (stage stats)
    chars: int = 0  # characters of text the documents hold (stage stats)
    rejections: tuple[dict[str, str], ...] = ()  # Rejection fields, in emission order


@dataclass(frozen=True)
class DocState:
    """What the chunk stage knows about one document."""

    doc_id: str
    doc_key: str  # hash of every document field the chunker reads
    chunk_ids: tuple[str, ...] = ()


FILE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("file_hash", pa.string()),
        ("doc_ids", pa.list_(pa.string())),
        ("formats", pa.list_(pa.string())),
        ("chars", pa.int64()),
        ("rejections", pa.string()),  # JSON list
    ]
)
DOC_SCHEMA = pa.schema(
    [("shard", pa.int32()), ("doc_id", pa.string()), ("doc_key", pa.string()),
     ("chunk_ids", pa.list_(pa.string()))]
)


@dataclass
class LedgerHeader:
    fingerprint: str
    shards: int
    outputs: dict[str, int] = field(default_factory=dict)  # shard file name -> size
    extra: dict[str, Any] = field(default_factory=dict)  # the stage's own per-shard bookkeeping

    def to_metadata(self) -> dict[bytes, bytes]:
        body = {"version": LEDGER_VERSION, "fingerprint": self.fingerprint, "shards": self.shards,
                "outputs": self.outputs, "extra": self.extra}
        return {b"embedline.ledger": json.dumps(body, sort_keys=True).encode()}


def _read_header(path: Path) -> LedgerHeader | None:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"embedline.ledger")
    if raw is None:
        return None
    body = json.loads(raw)
    if body.get("version") != LEDGER_VERSION:
        return None
    return LedgerHeader(body["fingerprint"], int(body["shards"]), dict(body.get("outputs") or {}),
                        dict(body.get("extra") or {}))


def read_header(path: Path) -> LedgerHeader | None:
    return _read_header(path) if path.exists() else None


def usable(path: Path, expected: LedgerHeader, outputs: Path) -> str | None:
    """Why the ledger at ``path`` cannot be trusted for this run (None = it can)."""
    if not path.exists():
        return "no ledger yet"
    try:
        header = _read_header(path)
    except (OSError, pa.ArrowInvalid) as exc:
        return f"unreadable ledger ({exc})"
    if header is None:
        return "ledger of another format version"
    if header.fingerprint != expected.fingerprint:
        return "params or code changed since the ledger was written"
    if header.shards != expected.shards:
        return f"shard count changed ({header.shards} -> {expected.shards})"
    if header.outputs != shard_sizes(outputs):
        return f"{outputs} does not match the ledger (edited, deleted or restored)"
    return None


def _write(path: Path, table: pa.Table, header: LedgerHeader) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata(header.to_metadata())
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


# ---- file ledger -----------------------------------------------------------------------------------
def read_files(path: Path) -> dict[str, FileEntry]:
    out: dict[str, FileEntry] = {}
    for row in pq.ParquetFile(path).read().to_pylist():  # not read_table: it imports pandas (1.6 s)
        out[row["path"]] = FileEntry(
            row["path"], row["size"], row["mtime_ns"], row["file_hash"], tuple(row["doc_ids"] or ()),
            tuple(row["formats"] or ()), row["chars"], tuple(json.loads(row["rejections"] or "[]")),
        )
    return out


def write_files(path: Path, entries: dict[str, FileEntry], header: LedgerHeader) -> None:
    rows: list[dict[str, Any]] = [
        {"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns, "file_hash": e.file_hash,
         "doc_ids": list(e.doc_ids), "formats": list(e.formats), "chars": e.chars, "rejections": json.dumps(list(e.rejections), sort_keys=True)}
        for _, e in sorted(entries.items())
    ]
    _write(path, pa.Table.from_pylist(rows, schema=FILE_SCHEMA), header)


# ---- chunk ledger ----------------------------------------------------------------------------------
def read_docs(path: Path, shard: int | None = None) -> dict[str, DocState]:
    """Every document's state, or one shard's (a filtered read: a fan-out worker reads its own)."""
    filters = [("shard", "=", shard)] if shard is not None else None
    # ParquetFile.read when unfiltered: pq.read_table imports pandas (1.6 s on a cold process)
    table = pq.ParquetFile(path).read() if filters is None else pq.read_table(path, filters=filters)
    return {
        row["doc_id"]: DocState(row["doc_id"], row["doc_key"], tuple(row["chunk_ids"] or ()))
        for row in table.to_pylist()
    }


def write_docs(path: Path, states: dict[str, DocState], header: LedgerHeader) -> None:
    rows = [{"shard": shard_of(s.doc_id, header.shards), "doc_id": s.doc_id, "doc_key": s.doc_key,
             "chunk_ids": list(s.chunk_ids)} for _, s in sorted(states.items())]
    _write(path, pa.Table.from_pylist(rows, schema=DOC_SCHEMA), header)


def fingerprint(params: Any, code: str) -> str:
    return stable_hash({"params": params, "code": code})[:32]
