"""Qdrant Edge (``qdrant-edge-py``): Qdrant's own engine, embedded in-process. The default backend.

Layout under ``qdrant.path``::

    collections/<name>/shard/            one EdgeShard per physical collection
    collections/<name>/vector_set.json   its VectorSetSpec (dims, distance, metadata)
    collections/<name>/recorded-payload_hash.parquet
                                         (id, payload hash) of every point, written by the last
                                         sync; deleted before any write (:meth:`EdgeStore.record_field`)
    aliases.json                         {"alias": "collection"}: replaced atomically (os.replace)
    .lock                                fcntl lock serialising alias/collection changes

Edge has no server-side aliases, so an alias is a pointer in ``aliases.json``; a swap writes a new
file and ``os.replace``-s it, so a reader sees either the old or the new target, never a mix.

Indexing: Edge builds HNSW only when :meth:`EdgeStore.optimize` is called (``EdgeShard.optimize``,
~60 s per 100 k × 384-d on 2 cores, far more than writing the points). :func:`embedline.tasks.vectorsets.build.run_build`
calls it after a sync that changed points, and it builds the index only once the collection holds
more than ``qdrant.index_threshold`` points (default ``EXACT_SEARCH_MAX``): below that, searches are
exact (brute force, ~9 ms at 100 k, recall 1.0 where HNSW gives 0.94), so an index would cost a
minute per build and buy nothing. Searches use exact while a collection is at or below the threshold
or not fully indexed, HNSW (``hnsw_ef``) otherwise.

Hybrid: a spec with ``sparse`` adds the named sparse vector ``bm25`` (IDF modifier) to the shard
config (:mod:`embedline.tasks.vectorsets.edge_schema`); :meth:`EdgeStore.search_hybrid` is one ``QueryRequest``
with a dense and a sparse prefetch fused by ``Fusion.Rrf``.

Shards are opened lazily, once per process, and shared by every EdgeStore on the same path. Edge
locks a shard to one process (its WAL): a second process waits up to ``EMBEDLINE_EDGE_LOCK_WAIT_S``
(30 s) for it, then fails with a clear error; concurrent readers and writers need a server.
Durability: the shard's write-ahead log is on, so an update acknowledged before a crash (SIGKILL)
is replayed when the shard is loaded again.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import fcntl
import itertools
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.vectorsets.base import (
    RRF_K,
    SPARSE_VECTOR,
    CollectionNotFoundError,
    ColumnPacking,
    FieldRecord,
    FieldScan,
    Hit,
    PageRelease,
    PayloadFields,
    PayloadFilter,
    PointRecord,
    PreparedWrites,
    SparseVector,
    StoreError,
    VectorSetSpec,
    VectorStore,
    as_vector,
    check_compatible,
    prefetch_limit,
    record_from,
    require_sparse,
)
from embedline.tasks.vectorsets.edge_schema import (
    FLAT_FIELDS,
    edge_config,
    edge_filter,
    edge_sparse,
    pack_columns,
    pack_payload,
    payload_selector,
    unpack_payload,
)

EXACT_SEARCH_MAX = 100_000  # exact search ~9 ms at 100 k x 384-d (FACTS.md)
LOCK_WAIT_S = float(os.environ.get("EMBEDLINE_EDGE_LOCK_WAIT_S", "30"))
HNSW_EF = 128
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")

_shards: dict[Path, Any] = {}  # shard dir -> EdgeShard (process-wide)
_shards_lock = threading.RLock()
_unrecorded: set[Path] = set()  # collection dirs this process wrote to since their last record_field


def _edge() -> Any:
    import qdrant_edge

    return qdrant_edge


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise StoreError(f"invalid collection/alias name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class EdgeStore:
    backend = "edge"
    # the engine releases the GIL while it writes a batch: the streams write while the caller's
    # thread builds the next requests (``prepare``: payloads, Points, all Python; write_points)
    max_parallel = 2

    def __init__(self, path: str | Path, index_threshold: int = EXACT_SEARCH_MAX):
        self.root = Path(path).resolve()
        self.index_threshold = index_threshold
        self.collections_dir = self.root / "collections"

    # ---- layout helpers ----------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.collections_dir / _check_name(name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _resolve(self, name: str) -> str:
        target = self.list_aliases().get(name)
        return target if target is not None else name

    def _shard(self, name: str, *, create_spec: VectorSetSpec | None = None) -> Any:
        name = self._resolve(name)
        shard_dir = self._dir(name) / "shard"
        with _shards_lock:
            shard = _shards.get(shard_dir)
            if shard is not None:
                return shard
            qe = _edge()
            if (shard_dir / "edge_config.json").exists():
                shard = _load_locked(qe, shard_dir, name)
            elif create_spec is not None:
                shutil.rmtree(shard_dir, ignore_errors=True)  # a create that crashed half-way
                shard = qe.EdgeShard.create(str(shard_dir), edge_config(create_spec))
            else:
                raise CollectionNotFoundError(name)
            _shards[shard_dir] = shard
            return shard

    # ---- collections -------------------------------------------------------------------------
    def ensure(self, vector_set: VectorSetSpec) -> bool:
        name = _check_name(vector_set.name)
        if name in self.list_aliases():
            raise StoreError(f"{name!r} is an alias; a physical collection cannot have its name")
        with self._locked():
            existing = self.describe(name)
            if existing is not None:
                check_compatible(existing, vector_set)
                shard = self._shard(name, create_spec=existing)
                missing = [f for f in vector_set.payload_indexes if f not in existing.payload_indexes]
                if missing:  # qdrant.payload_indexes grew: index the new fields (existing points included)
                    self._index_fields(shard, missing)
                    meta_path = self._dir(name) / "vector_set.json"
                    meta = json.loads(meta_path.read_text(encoding="utf-8"))
                    meta["payload_indexes"] = [*existing.payload_indexes, *missing]
                    _write_json_atomic(meta_path, meta)
                return False
            d = self._dir(name)
            d.mkdir(parents=True, exist_ok=True)
            meta = {
                "name": name,
                "dims": vector_set.dims,
                "distance": vector_set.distance,
                "on_disk": vector_set.on_disk,
                "quantization": vector_set.quantization,
                "payload_indexes": list(vector_set.payload_indexes),
                "hnsw_m": vector_set.hnsw_m,
                "sparse": vector_set.sparse,
                "metadata": dict(vector_set.metadata),
            }
            _write_json_atomic(d / "vector_set.json", meta)
            shard = self._shard(name, create_spec=vector_set)
            self._index_fields(shard, vector_set.payload_indexes)
            return True

    @staticmethod
    def _index_fields(shard: Any, fields: Sequence[str]) -> None:
        """Keyword indexes on ``fields`` (top-level payload fields: doc_id, source, chunk_id). Each
        lives in RAM while its segment is appendable: ~0.2-0.4 KB a point on the Debian corpus."""
        qe = _edge()
        for field_name in fields:
            shard.update(qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword))
        shard.flush()

    def describe(self, collection: str) -> VectorSetSpec | None:
        name = self._resolve(collection)
        meta_path = self._dir(name) / "vector_set.json"
        if not meta_path.exists():
            return None
        m = json.loads(meta_path.read_text(encoding="utf-8"))
        return VectorSetSpec(
            name=m["name"],
            dims=int(m["dims"]),
            distance=m["distance"],
            on_disk=bool(m.get("on_disk", False)),
            quantization=m.get("quantization", "none"),
            payload_indexes=tuple(m.get("payload_indexes", ())),
            hnsw_m=int(m.get("hnsw_m", 16)),
            metadata=m.get("metadata", {}),
            sparse=bool(m.get("sparse", False)),
        )

    def list_collections(self) -> list[str]:
        if not self.collections_dir.exists():
            return []
        return sorted(
            p.name for p in self.collections_dir.iterdir() if (p / "vector_set.json").exists()
        )

    def drop_collection(self, name: str) -> None:
        name = _check_name(name)
        with self._locked():
            if name in self.list_aliases().values():
                raise StoreError(f"collection {name!r} is the target of an alias; swap the alias first")
            d = self._dir(name)
            if not d.exists():
                return
            self._close_shard(d / "shard")
            trash = self.collections_dir / f".trash-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(d, trash)  # atomic: the collection disappears at once
            shutil.rmtree(trash, ignore_errors=True)

    # ---- aliases -----------------------------------------------------------------------------
    def list_aliases(self) -> dict[str, str]:
        p = self.root / "aliases.json"
        if not p.exists():
            return {}
        data = json.loads(p.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()}

    def get_alias(self, alias: str) -> str | None:
        return self.list_aliases().get(alias)

    def swap_alias(self, alias: str, collection: str) -> None:
        _check_name(alias)
        with self._locked():
            if not (self._dir(collection) / "vector_set.json").exists():
                raise CollectionNotFoundError(collection)
            if (self._dir(alias) / "vector_set.json").exists():
                raise StoreError(f"alias {alias!r} clashes with a physical collection of that name")
            aliases = self.list_aliases()
            aliases[alias] = collection
            _write_json_atomic(self.root / "aliases.json", aliases)

    def delete_alias(self, alias: str) -> None:
        with self._locked():
            aliases = self.list_aliases()
            if aliases.pop(alias, None) is not None:
                _write_json_atomic(self.root / "aliases.json", aliases)

    # ---- points ------------------------------------------------------------------------------
    def upsert(self, collection: str, points: Sequence[PointRecord]) -> None:
        if points:
            self.write_prepared(collection, self.prepare(points))

    def prepare(self, points: Sequence[PointRecord]) -> Any:
        """The engine's upsert request for ``points`` (Python work: it holds the GIL). The write
        path builds it in the thread that reads the records and hands it to a writer thread
        (:meth:`write_prepared`, which runs without the GIL): qdrant-edge-py gives the GIL up and
        takes it back on every payload value it fails to convert (pyo3 error normalisation), so
        two threads converting at once wait on each other at every string (module doc of
        :mod:`~embedline.tasks.vectorsets.edge_schema`)."""
        qe = _edge()
        batch = []
        for p, dense in zip(points, _dense_vectors(points), strict=True):
            vector: Any = dense
            if p.sparse is not None:
                vector = {"": as_vector(dense), SPARSE_VECTOR: edge_sparse(p.sparse)}
            batch.append(qe.Point(p.id, vector, p.payload if p.packed else pack_payload(p.payload)))
        return qe.UpdateOperation.upsert_points(batch)

    def write_prepared(self, collection: str, prepared: Any) -> None:
        """Write a request :meth:`prepare` built (the engine releases the GIL meanwhile)."""
        self._forget_record(collection)
        self._shard(collection).update(prepared)

    @staticmethod
    def pack_columns(
        cols: Mapping[str, list[Any]], *, fingerprint: str, model: str, known_hashes: Sequence[str | None]
    ) -> list[dict[str, Any]]:
        """The payloads of a deduped column batch, packed as :meth:`upsert` stores them (the write
        path builds them column-wise, :func:`~embedline.tasks.vectorsets.edge_schema.pack_columns`)."""
        return pack_columns(cols, fingerprint=fingerprint, model=model, known_hashes=known_hashes)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            qe = _edge()
            self._forget_record(collection)
            self._shard(collection).update(qe.UpdateOperation.delete_points([str(i) for i in ids]))

    def scan(
        self,
        collection: str,
        *,
        with_vectors: bool = False,
        with_payload: PayloadFields = True,
        batch: int = 1024,
    ) -> Iterator[PointRecord]:
        qe = _edge()
        shard = self._shard(collection)
        payload, keep = payload_selector(with_payload)
        offset = None
        while True:
            recs, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=batch, with_payload=payload, with_vector=with_vectors)
            )
            for r in recs:
                yield _unpacked(record_from(r), keep)
            if offset is None:
                return

    def scan_field(self, collection: str, field: str, *, batch: int = 2048) -> Iterator[tuple[str, Any]]:
        """``(id, payload[field])`` of every point, for a flat field (:data:`FLAT_FIELDS`): what the
        sync scans (the payload hash), without building a record or unpacking a payload per point."""
        if field not in FLAT_FIELDS:
            yield from ((p.id, (p.payload or {}).get(field)) for p in self.scan(collection, with_payload=[field]))
            return
        qe = _edge()
        shard = self._shard(collection)
        offset = None
        while True:
            recs, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=batch, with_payload=[field], with_vector=False)
            )
            yield from ((str(r.id), (r.payload or {}).get(field)) for r in recs)
            if offset is None:
                return

    # ---- the recorded field: what a sync would otherwise scan -----------------------------------
    def _record_path(self, collection: str, field: str) -> Path:
        return self._dir(self._resolve(collection)) / f"recorded-{field}.parquet"

    def _forget_record(self, collection: str) -> None:
        """Before the first write of this process to ``collection``: delete its recorded fields
        (they describe the points as they were; the next sync scans the store again)."""
        d = self._dir(self._resolve(collection))
        with _shards_lock:
            if d in _unrecorded:
                return
            _unrecorded.add(d)
        for f in d.glob("recorded-*.parquet"):
            f.unlink(missing_ok=True)

    def record_field(self, collection: str, field: str, pairs: Iterator[tuple[str, str]]) -> None:
        """Record ``(id, payload[field])`` of every point the collection holds now (the caller
        knows: a sync that just made the collection equal its desired state). The next sync reads
        it instead of scanning every point's payload (:meth:`recorded_field`); any write through
        this store deletes it first (:meth:`_forget_record`)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self._record_path(collection, field)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        schema = pa.schema([("id", pa.string()), ("value", pa.string())])
        with pq.ParquetWriter(tmp, schema, compression="none") as writer:
            while part := list(itertools.islice(pairs, 8192)):
                ids, values = zip(*part, strict=True)
                writer.write_table(pa.table([pa.array(ids, pa.string()), pa.array(values, pa.string())], schema=schema))
        os.replace(tmp, path)
        with _shards_lock:
            _unrecorded.discard(path.parent)

    def recorded_field(self, collection: str, field: str) -> Iterator[tuple[str, str]] | None:
        """The pairs :meth:`record_field` recorded, if no write came since and the collection
        still holds as many points (None: scan the store)."""
        import pyarrow.parquet as pq

        path = self._record_path(collection, field)
        if not path.exists():
            return None
        pf = pq.ParquetFile(path)
        if pf.metadata.num_rows != self.count(collection):
            return None
        return (pair for batch in pf.iter_batches(batch_size=8192)
                for pair in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True))

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[PointRecord]:
        if not ids:
            return []
        recs = self._shard(collection).retrieve([str(i) for i in ids], with_payload=True, with_vector=with_vectors)
        return [_unpacked(record_from(r), None) for r in recs]

    def count(self, collection: str) -> int:
        return int(self._shard(collection).count(_edge().CountRequest(exact=True)))

    def search(
        self,
        collection: str,
        vector: np.ndarray | Sequence[float],
        k: int = 10,
        filter: PayloadFilter | None = None,
        *,
        with_payload: PayloadFields = True,
    ) -> list[Hit]:
        qe = _edge()
        shard = self._shard(collection)
        payload, keep = payload_selector(with_payload)
        res = shard.query(
            qe.QueryRequest(
                limit=k,
                query=qe.Query.Nearest(as_vector(vector)),
                with_payload=payload,
                filter=edge_filter(filter),
                params=self._dense_params(shard, k),
            )
        )
        return _hits(res, keep)

    def _dense_params(self, shard: Any, k: int) -> Any:
        """Exact search while small or not fully indexed, HNSW otherwise."""
        qe = _edge()
        info = shard.info()
        exact = info.points_count <= self.index_threshold or info.indexed_vectors_count < info.points_count
        return qe.SearchParams(exact=True) if exact else qe.SearchParams(hnsw_ef=max(HNSW_EF, k))

    def search_hybrid(
        self,
        collection: str,
        dense_vector: np.ndarray | Sequence[float],
        sparse_query: SparseVector,
        k: int = 10,
        filter: PayloadFilter | None = None,
        *,
        prefetch: int | None = None,
    ) -> list[Hit]:
        require_sparse(self, collection)
        qe = _edge()
        shard = self._shard(collection)
        flt = edge_filter(filter)
        limit = prefetch_limit(k, prefetch)
        sparse = edge_sparse(sparse_query)
        res = shard.query(
            qe.QueryRequest(
                limit=k,
                prefetches=[
                    qe.Prefetch(limit=limit, query=qe.Query.Nearest(as_vector(dense_vector)), filter=flt,
                                params=self._dense_params(shard, limit)),
                    qe.Prefetch(limit=limit, query=qe.Query.Nearest(sparse, using=SPARSE_VECTOR), filter=flt),
                ],
                query=qe.Fusion.Rrf(k=RRF_K),
                filter=flt,
                with_payload=True,
            )
        )
        return _hits(res, None)

    def search_sparse(
        self, collection: str, sparse_query: SparseVector, k: int = 10, filter: PayloadFilter | None = None,
        *, with_payload: PayloadFields = True,
    ) -> list[Hit]:
        """BM25 sparse search alone (for client-side fusion, :mod:`embedline.tasks.vectorsets.fusion`)."""
        require_sparse(self, collection)
        qe = _edge()
        if not len(sparse_query):
            return []
        payload, keep = payload_selector(with_payload)
        res = self._shard(collection).query(
            qe.QueryRequest(
                limit=k, query=qe.Query.Nearest(edge_sparse(sparse_query), using=SPARSE_VECTOR),
                filter=edge_filter(filter),
                with_payload=payload,
            )
        )
        return _hits(res, keep)

    def optimize(self, collection: str) -> None:
        """Build HNSW once the collection is past ``index_threshold`` points (searched exactly below)."""
        shard = self._shard(collection)
        if shard.info().points_count > self.index_threshold:
            shard.optimize()
        shard.flush()

    def release_pages(self) -> None:
        """Unmap the pages this process wrote or read through the store's memory maps (they stay
        in the OS page cache): the upsert calls it between requests, so its resident set does not
        grow with the points written (:func:`embedline.tasks.memory.release_mapped`)."""
        from embedline.tasks.memory import release_freed, release_mapped

        release_mapped(self.root)
        release_freed()  # and the heap the written requests and their source rows freed

    # ---- lifecycle ---------------------------------------------------------------------------
    def _close_shard(self, shard_dir: Path) -> None:
        with _shards_lock:
            shard = _shards.pop(shard_dir, None)
            if shard is not None:
                shard.flush()
                shard.close()

    def flush(self) -> None:
        with _shards_lock:
            for d, shard in _shards.items():
                if self.root in d.parents:
                    shard.flush()

    def close(self) -> None:
        with _shards_lock:
            for d in [d for d in _shards if self.root in d.parents]:
                self._close_shard(d)


def _abilities(store: EdgeStore) -> tuple[VectorStore, PreparedWrites, ColumnPacking, PageRelease, FieldScan, FieldRecord]:
    """EdgeStore is a VectorStore with every optional ability (type-checked here, by mypy)."""
    return store, store, store, store, store, store


def _dense_vectors(points: Sequence[PointRecord]) -> list[Any]:
    """The points' dense vectors as qdrant-edge-py converts them fastest: a float32 numpy row as an
    ``array.array('f')`` of its bytes (pyo3 reads it as a sequence of Python floats created one at
    a time: about half the time of ``tolist()`` + list, and the same float32 values), anything else
    as a list of floats."""
    out: list[Any] = []
    for p in points:
        v = p.vector
        if v is None:
            raise StoreError(f"point {p.id} has no vector")
        if isinstance(v, np.ndarray) and v.dtype == np.float32 and v.ndim == 1 and v.flags.c_contiguous:
            out.append(array.array("f", v.tobytes()))
        else:
            out.append(as_vector(v))
    return out


def _unpacked(rec: PointRecord, keep: list[str] | None) -> PointRecord:
    return dataclasses.replace(rec, payload=unpack_payload(rec.payload, keep)) if rec.payload else rec


def _hits(res: Any, keep: list[str] | None) -> list[Hit]:
    return [Hit(id=str(r.id), score=float(r.score), payload=unpack_payload(r.payload, keep)) for r in res]


def _load_locked(qe: Any, shard_dir: Path, name: str) -> Any:
    """Load a shard, waiting up to ``LOCK_WAIT_S`` while another process holds it."""
    deadline = time.monotonic() + LOCK_WAIT_S
    delay = 0.1
    while True:
        try:
            return qe.EdgeShard.load(str(shard_dir))
        except Exception as exc:
            if "WouldBlock" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"collection {name!r} at {shard_dir} is open in another process (Qdrant Edge allows "
                    f"one process per collection; waited {LOCK_WAIT_S:.0f} s). Wait for that run to finish, "
                    "or use a Qdrant server (qdrant.url) for concurrent access."
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
