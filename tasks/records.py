"""The nouns of the pipeline (Document, Chunk, Rejection), their identities, and their Parquet IO.

Stages exchange these as files: Parquet for documents and chunks (written and read in batches, so
memory stays bounded), JSON lines for rejections. Identity is content-derived and deterministic:

- doc id        = hash(source path relative to the source root)
- content hash  = hash(document text)
- chunk id      = hash(doc id, chunk text hash, position)
- point id      = uuid5(chunk id)
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from embedline.tasks import shards
from embedline.tasks.artifacts import atomic_path, atomic_write_text, temp_path_for

POINT_NAMESPACE = uuid.UUID("6f6e1d2c-8a52-5f0e-9a3e-656d6265646c")  # "embedl" namespace
BATCH_ROWS = 2048


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def doc_id_for(rel_path: str) -> str:
    """Hash of the relative path's bytes: a file name that is not valid UTF-8 (a str holding
    surrogate escapes, as ``os.scandir`` returns it) hashes its raw bytes; other names hash as before."""
    return hashlib.sha256(_raw_bytes(Path(rel_path).as_posix())).hexdigest()[:32]


def _raw_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (e.g. "\ud800" in JSON)
        return text.encode("utf-8", "surrogatepass")


def display_path(text: str) -> str:
    """``text`` as valid UTF-8: the bytes of a non-UTF-8 file name (surrogate escapes) become
    ``\\xNN``, other lone surrogates ``\\uNNNN``; valid text is returned unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def rejection_json(rej: Rejection) -> str:
    """One JSON line for a rejection; paths and details of non-UTF-8 names come out escaped."""
    row = {k: display_path(v) for k, v in asdict(rej).items()}
    return json.dumps(row, ensure_ascii=False)


def content_hash(text: str) -> str:
    return sha256(text)[:32]


def chunk_id_for(doc_id: str, text_hash: str, position: int) -> str:
    return sha256(f"{doc_id}:{text_hash}:{position}")[:32]


def point_id_for(chunk_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, chunk_id))


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str  # path relative to the source root (posix); for JSONL records: "file.jsonl#id"
    title: str
    text: str  # extracted, cleaned display text (chunk spans index into it)
    content_hash: str
    format: str  # loader name: txt, markdown, html, json, code, pdf
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    source: str
    title: str
    text: str  # the display text of the chunk (a span of Document.text, maybe header-prefixed)
    embed_text: str  # normalised text that is embedded (prompt not included)
    text_hash: str  # hash of embed_text: the exact-dedupe and cache key
    chunk_index: int
    char_start: int
    char_end: int
    token_count: int
    heading_path: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def point_id(self) -> str:
        return point_id_for(self.chunk_id)


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: str  # short machine-friendly kind: binary, empty, too_large, undecodable, ...
    detail: str = ""


# ---- Parquet schemas ---------------------------------------------------------------------------
DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("title", pa.string()),
        ("text", pa.large_string()),
        ("content_hash", pa.string()),
        ("format", pa.string()),
        ("metadata", pa.string()),  # JSON
    ]
)

CHUNK_SCHEMA = pa.schema(
    [
        ("chunk_id", pa.string()),
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("title", pa.string()),
        ("text", pa.large_string()),
        ("embed_text", pa.large_string()),
        ("text_hash", pa.string()),
        ("chunk_index", pa.int32()),
        ("char_start", pa.int64()),
        ("char_end", pa.int64()),
        ("token_count", pa.int32()),
        ("heading_path", pa.list_(pa.string())),
        ("metadata", pa.string()),  # JSON
    ]
)

T = TypeVar("T", Document, Chunk)
_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in (Document, Chunk)}
_SCHEMAS: dict[type, pa.Schema] = {Document: DOCUMENT_SCHEMA, Chunk: CHUNK_SCHEMA}


def _to_row(rec: Document | Chunk) -> dict[str, Any]:
    # a shallow copy: ``asdict`` deep-copies the metadata of every record only to dump it as JSON
    row = {name: getattr(rec, name) for name in _FIELDS[type(rec)]}
    row["metadata"] = json.dumps(row.get("metadata") or {}, sort_keys=True, ensure_ascii=False)
    if "heading_path" in row:
        row["heading_path"] = list(row["heading_path"])
    return row


def _from_row(cls: type[T], row: dict[str, Any]) -> T:
    names = {f.name for f in fields(cls)}
    kw = {k: v for k, v in row.items() if k in names}
    kw["metadata"] = json.loads(kw.get("metadata") or "{}")
    if "heading_path" in kw:
        kw["heading_path"] = tuple(kw["heading_path"] or ())
    return cls(**kw)


class ParquetSink:
    """Write records to a Parquet file in row batches (atomically: tmp file + rename on close)."""

    def __init__(self, path: str | Path, cls: type[Document] | type[Chunk], batch_rows: int = BATCH_ROWS,
                 batch_chars: int | None = None):
        """``batch_chars``: also flush once the buffered records' texts reach this many characters
        (a few large documents do not fill memory before ``batch_rows`` is reached)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = _SCHEMAS[cls]
        self._tmp = temp_path_for(self.path)
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self._buf: list[dict[str, Any]] = []
        self.batch_rows = batch_rows
        self.batch_chars = batch_chars
        self._chars = 0
        self.count = 0

    def write(self, rec: Document | Chunk) -> None:
        self._buf.append(_to_row(rec))
        self.count += 1
        self._chars += len(rec.text)
        if len(self._buf) >= self.batch_rows or (self.batch_chars is not None and self._chars >= self.batch_chars):
            self._flush()

    def write_all(self, recs: Iterable[Document | Chunk]) -> None:
        for r in recs:
            self.write(r)

    def _flush(self) -> None:
        if self._buf:
            self._writer.write_table(pa.Table.from_pylist(self._buf, schema=self.schema))
            self._buf = []
        self._chars = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def iter_records(path: str | Path, cls: type[T], batch_rows: int = BATCH_ROWS) -> Iterator[T]:
    """Stream records from a Parquet file or a shard folder, one row batch in memory at a time."""
    for batch in shards.iter_batches(path, batch_rows=batch_rows):
        for row in batch.to_pylist():
            yield _from_row(cls, row)


def write_records(path: str | Path, cls: type[T], recs: Iterable[T]) -> int:
    with ParquetSink(path, cls) as sink:
        sink.write_all(recs)
        return sink.count


def count_rows(path: str | Path) -> int:
    return shards.num_rows(path)


def records_table(cls: type[Document] | type[Chunk], recs: Iterable[Document | Chunk]) -> pa.Table:
    """Records as one Arrow table in the artifact schema (a shard's worth: callers bound it)."""
    return pa.Table.from_pylist([_to_row(r) for r in recs], schema=_SCHEMAS[cls])


def write_rejections(path: str | Path, rejections: Iterable[Rejection]) -> int:
    n = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for r in rejections:
            fh.write(rejection_json(r) + "\n")
            n += 1
    return n


def read_rejections(path: str | Path) -> list[Rejection]:
    p = Path(path)
    if not p.exists():
        return []
    return [Rejection(**json.loads(line)) for line in p.read_text(encoding="utf-8").splitlines() if line]


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically with stable formatting (DVC metrics, manifests, receipts)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
