"""Content-addressed embedding cache: one SQLite file (WAL mode), safe under concurrent writers.

Key = (namespace, text_hash). The namespace is a hash of everything that decides a vector's value
besides the text: provider, model, model revision, backend, precision, prompt, dimensions and
normalisation (:func:`namespace_for`). Vectors are float32 blobs. Every ``put_many`` is one short
transaction, so batches are durable as soon as they finish: a crash or Ctrl-C mid-embed resumes
without paying again. Many processes may read and write at once (WAL + ``busy_timeout``);
``INSERT OR IGNORE`` keeps the first writer's vector for a key, so concurrent duplicates agree.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.config import EmbedParams, computation_marks, stable_hash

# A rowid table with a unique key index, not ``WITHOUT ROWID``: a 1-1.5 KB vector blob is larger
# than a WITHOUT ROWID (index b-tree) page keeps inline (~1,000 bytes on a 4 KiB page), so every row
# spilled to its own overflow page: ~4 KiB on disk per 1 KiB vector (4.5 GB of cache and 28 GB of
# writes by 1 M vectors). A table b-tree keeps the blob inline; 8 KiB pages (new files) hold five
# 384-d rows each. Files in the old layout are migrated once when opened (:func:`_migrate`).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    ns TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    dims INTEGER NOT NULL,
    vec BLOB NOT NULL,
    UNIQUE (ns, text_hash)
);
CREATE TABLE IF NOT EXISTS namespaces (
    ns TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
"""
PAGE_SIZE = 8192


def _old_layout(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'vectors'").fetchone()
    return bool(row) and "WITHOUT ROWID" in str(row[0]).upper()


def _migrate(conn: sqlite3.Connection) -> None:
    """Copy a ``WITHOUT ROWID`` vectors table into the rowid layout (one transaction; a concurrent
    opener waits on the lock, then finds the new layout)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _old_layout(conn):
            conn.execute("ALTER TABLE vectors RENAME TO vectors_old")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT OR IGNORE INTO vectors (ns, text_hash, dims, vec) "
                         "SELECT ns, text_hash, dims, vec FROM vectors_old ORDER BY ns, text_hash")
            conn.execute("DROP TABLE vectors_old")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("VACUUM")


_IN_CHUNK = 500  # stay well below SQLite's host-parameter limit


def namespace_spec(params: EmbedParams, revision: str, prompt: str | None = None) -> dict[str, Any]:
    """What decides a vector besides its text; ``prompt`` defaults to the passage prompt."""
    return {
        "provider": params.provider,
        "model": params.model,
        "revision": revision,
        "backend": params.backend,
        "precision": params.precision,
        "prompt": params.passage_prompt if prompt is None else prompt,
        "dimensions": params.dimensions,
        "normalize": params.normalize,
        **computation_marks(params),
    }


def namespace_for(params: EmbedParams, revision: str, prompt: str | None = None) -> str:
    """Cache namespace of vectors made with ``params`` by a model at ``revision`` (passage
    vectors unless another ``prompt``, e.g. the query prompt, is given)."""
    return stable_hash(namespace_spec(params, revision, prompt))[:32]


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _when_unlocked(op: Callable[[], Any], timeout_ms: int) -> Any:
    """Run ``op``, retrying while another connection holds the lock (bounded by ``timeout_ms``).
    tenacity is imported only when the lock is held (its import, which pulls in tornado where that
    is installed, was ~0.1 s of every process that opened the cache)."""
    try:
        return op()
    except sqlite3.OperationalError as exc:
        if not _is_locked(exc):
            raise
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

    retrying = Retrying(
        retry=retry_if_exception(_is_locked),
        stop=stop_after_delay(timeout_ms / 1000),
        wait=wait_exponential(multiplier=0.01, max=0.5),
        reraise=True,
    )
    return retrying(op)


class EmbeddingCache:
    """SQLite-backed vector store keyed by (namespace, text hash). One connection per thread."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 60_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.writes = 0
        conn = self._conn()
        _when_unlocked(lambda: conn.executescript(_SCHEMA), self.busy_timeout_ms)
        if _old_layout(conn):
            _when_unlocked(lambda: _migrate(conn), self.busy_timeout_ms)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,  # each thread still uses only its own connection
            )
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new, empty file
            # WAL is persistent in the file: only the first opener switches it, and that switch
            # needs an exclusive moment that SQLite's busy handler does not wait for.
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                _when_unlocked(lambda: conn.execute("PRAGMA journal_mode=WAL"), self.busy_timeout_ms)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def register(self, ns: str, spec: dict[str, Any]) -> None:
        """Record what a namespace means (for humans inspecting the file)."""
        import json

        c = self._conn()
        c.execute(
            "INSERT OR IGNORE INTO namespaces (ns, spec) VALUES (?, ?)",
            (ns, json.dumps(spec, sort_keys=True)),
        )

    def _select(self, ns: str, columns: str, wanted: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """Rows ``columns`` of ``ns`` whose text hash is in ``wanted`` (SQLite caps the ``IN`` list:
        asked :data:`_IN_CHUNK` at a time)."""
        c = self._conn()
        for i in range(0, len(wanted), _IN_CHUNK):
            part = wanted[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(part))
            yield from c.execute(f"SELECT {columns} FROM vectors WHERE ns = ? AND text_hash IN ({marks})",
                                 (ns, *part))

    def get_many(self, ns: str, hashes: Sequence[str], *, count: bool = True) -> dict[str, np.ndarray]:
        """Cached vectors for ``hashes`` (missing ones absent). Updates hit/miss counts."""
        wanted = list(dict.fromkeys(hashes))
        out = {h: np.frombuffer(blob, dtype=np.float32) for h, blob in self._select(ns, "text_hash, vec", wanted)}
        if count:
            with self._lock:
                self.hits += len(out)
                self.misses += len(wanted) - len(out)
        return out

    def have(self, ns: str, hashes: Sequence[str]) -> set[str]:
        """The ``hashes`` that have a cached vector (keys only: no vector is read or decoded)."""
        return {h for (h,) in self._select(ns, "text_hash", list(dict.fromkeys(hashes)))}

    def missing(self, ns: str, hashes: Sequence[str]) -> list[str]:
        """Hashes (unique, in order) with no cached vector; does not touch hit/miss counts."""
        have = self.have(ns, hashes)
        return [h for h in dict.fromkeys(hashes) if h not in have]

    def put_many(self, ns: str, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store vectors in one short transaction (first writer wins on a duplicate key)."""
        rows = []
        for h, v in items:
            arr = np.ascontiguousarray(v, dtype=np.float32)
            rows.append((ns, h, int(arr.shape[0]), arr.tobytes()))
        if not rows:
            return 0
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(
                "INSERT OR IGNORE INTO vectors (ns, text_hash, dims, vec) VALUES (?, ?, ?, ?)", rows
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        with self._lock:
            self.writes += len(rows)
        return len(rows)

    def count(self, ns: str | None = None) -> int:
        c = self._conn()
        if ns is None:
            return int(c.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
        return int(c.execute("SELECT COUNT(*) FROM vectors WHERE ns = ?", (ns,)).fetchone()[0])

    def dims(self, ns: str) -> int | None:
        row = self._conn().execute("SELECT dims FROM vectors WHERE ns = ? LIMIT 1", (ns,)).fetchone()
        return int(row[0]) if row else None

    def stats(self) -> dict[str, int]:
        return {"cache_hits": self.hits, "cache_misses": self.misses, "cache_writes": self.writes}

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
