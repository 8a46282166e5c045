"""qdrant-client backends: ``local`` (``QdrantClient(path=...)``) and ``server`` (``url=``).

One implementation serves both; aliases are Qdrant's own (``update_collection_aliases`` with a
delete + create in one request, which the server applies atomically). The vector set's metadata
(fingerprint, model, created_at) is stored as Qdrant collection metadata.

Local mode is slow (it commits SQLite per point: ~700 points/s; FACTS.md) and warns above 20 k
points: use it for compatibility tests, the server for production, Edge for embedded use.
Hybrid: a spec with ``sparse`` adds ``sparse_vectors_config={"bm25": IDF modifier}``; the search is one
``query_points`` call with a dense and a sparse ``Prefetch`` and an ``RrfQuery`` (RRF with k=RRF_K;
needs a Qdrant server recent enough for parametrised RRF, as qdrant-client 1.20 expects).
Clients are created lazily, once per process per location. Requests are retried only on transient
errors (:mod:`embedline.tasks.vectorsets.retry`); uploads use ``wait=True``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.vectorsets.base import (
    RRF_K,
    SPARSE_VECTOR,
    CollectionNotFoundError,
    Hit,
    PayloadFields,
    PayloadFilter,
    PointRecord,
    SparseVector,
    StoreError,
    VectorSetSpec,
    as_vector,
    check_compatible,
    prefetch_limit,
    record_from,
    require_sparse,
)
from embedline.tasks.vectorsets.retry import call_with_retry

_clients: dict[tuple[str, ...], Any] = {}
_clients_lock = threading.Lock()


def _models() -> Any:
    from qdrant_client import models

    return models


class QdrantClientStore:
    """A VectorStore over one ``QdrantClient`` (local path or server URL)."""

    def __init__(
        self,
        *,
        backend: str,
        key: tuple[str, ...],
        client_kwargs: dict[str, Any],
        max_parallel: int = 1,
        max_retries: int = 5,
    ):
        self.backend = backend
        self.max_parallel = max_parallel
        self.max_retries = max_retries
        self._key = key
        self._client_kwargs = client_kwargs

    @property
    def client(self) -> Any:
        with _clients_lock:
            c = _clients.get(self._key)
            if c is None:
                from qdrant_client import QdrantClient

                c = _clients[self._key] = QdrantClient(**self._client_kwargs)
            return c

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return call_with_retry(self.max_retries, getattr(self.client, method), *args, **kwargs)

    # ---- collections -------------------------------------------------------------------------
    def ensure(self, vector_set: VectorSetSpec) -> bool:
        m = _models()
        existing = self.describe(vector_set.name)
        if existing is not None:
            if existing.name != vector_set.name:
                raise StoreError(f"{vector_set.name!r} is an alias; a physical collection cannot have its name")
            check_compatible(existing, vector_set)
            missing = [f for f in vector_set.payload_indexes if f not in existing.payload_indexes]
            if missing:  # qdrant.payload_indexes grew: index the new fields, then record them
                self._index_fields(vector_set.name, missing)
                info = self._call("get_collection", vector_set.name)
                raw = dict((getattr(info.config, "metadata", None) or {}).get("embedline", {}))
                raw["payload_indexes"] = [*existing.payload_indexes, *missing]
                self._call("update_collection", collection_name=vector_set.name, metadata={"embedline": raw})
            return False
        quant = {
            "none": None,
            "scalar": lambda: m.ScalarQuantization(
                scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, always_ram=True)
            ),
            "binary": lambda: m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True)),
        }[vector_set.quantization]
        meta = {
            "embedline": {
                "dims": vector_set.dims,
                "distance": vector_set.distance,
                "on_disk": vector_set.on_disk,
                "quantization": vector_set.quantization,
                "payload_indexes": list(vector_set.payload_indexes),
                "hnsw_m": vector_set.hnsw_m,
                **dict(vector_set.metadata),
            }
        }
        self._call(
            "create_collection",
            collection_name=vector_set.name,
            vectors_config=m.VectorParams(
                size=vector_set.dims,
                distance=getattr(m.Distance, vector_set.distance.upper()),
                on_disk=vector_set.on_disk,
            ),
            on_disk_payload=vector_set.on_disk,
            sparse_vectors_config=(
                {SPARSE_VECTOR: m.SparseVectorParams(
                    modifier=m.Modifier.IDF, index=m.SparseIndexParams(on_disk=vector_set.on_disk)
                )}
                if vector_set.sparse
                else None
            ),
            hnsw_config=m.HnswConfigDiff(m=vector_set.hnsw_m),
            quantization_config=quant() if quant else None,
            metadata=meta,
        )
        self._index_fields(vector_set.name, vector_set.payload_indexes)
        return True

    def _index_fields(self, collection: str, fields: Sequence[str]) -> None:
        # local mode ignores payload indexes (and warns): only a server builds them
        m = _models()
        for field_name in fields if self.backend == "server" else ():
            self._call(
                "create_payload_index",
                collection_name=collection,
                field_name=field_name,
                field_schema=m.PayloadSchemaType.KEYWORD,
                wait=True,
            )

    def describe(self, collection: str) -> VectorSetSpec | None:
        name = self._resolve(collection)
        if not self._call("collection_exists", name):
            return None
        info = self._call("get_collection", name)
        params = info.config.params.vectors
        if isinstance(params, dict):
            params = params.get("")
        raw = dict((getattr(info.config, "metadata", None) or {}).get("embedline", {}))
        dims = int(raw.pop("dims", params.size if params is not None else 0))
        distance: Any = raw.pop("distance", None) or str(params.distance.value if params else "Cosine")
        on_disk = bool(raw.pop("on_disk", False))
        quantization = raw.pop("quantization", "none")
        indexes = tuple(raw.pop("payload_indexes", ()))
        hnsw_m = int(raw.pop("hnsw_m", 16))
        sparse = SPARSE_VECTOR in (info.config.params.sparse_vectors or {})
        return VectorSetSpec(
            name=name,
            dims=dims,
            distance=distance,
            on_disk=on_disk,
            quantization=quantization,
            payload_indexes=indexes,
            hnsw_m=hnsw_m,
            metadata=raw,
            sparse=sparse,
        )

    def list_collections(self) -> list[str]:
        return sorted(c.name for c in self._call("get_collections").collections)

    def drop_collection(self, name: str) -> None:
        if name in self.list_aliases().values():
            raise StoreError(f"collection {name!r} is the target of an alias; swap the alias first")
        if self._call("collection_exists", name):
            self._call("delete_collection", name)

    # ---- aliases -----------------------------------------------------------------------------
    def list_aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self._call("get_aliases").aliases}

    def get_alias(self, alias: str) -> str | None:
        return self.list_aliases().get(alias)

    def _resolve(self, name: str) -> str:
        return self.list_aliases().get(name, name)

    def swap_alias(self, alias: str, collection: str) -> None:
        m = _models()
        if not self._call("collection_exists", collection):
            raise CollectionNotFoundError(collection)
        ops: list[Any] = []
        if self.get_alias(alias) is not None:
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
        ops.append(
            m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=collection, alias_name=alias))
        )
        self._call("update_collection_aliases", change_aliases_operations=ops)

    def delete_alias(self, alias: str) -> None:
        m = _models()
        if self.get_alias(alias) is not None:
            self._call(
                "update_collection_aliases",
                change_aliases_operations=[m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias))],
            )

    # ---- points ------------------------------------------------------------------------------
    def _require(self, collection: str) -> str:
        name = self._resolve(collection)
        if not self._call("collection_exists", name):
            raise CollectionNotFoundError(collection)
        return name

    def upsert(self, collection: str, points: Sequence[PointRecord]) -> None:
        if not points:
            return
        m = _models()
        structs = []
        for p in points:
            if p.vector is None:
                raise StoreError(f"point {p.id} has no vector")
            vector: Any = as_vector(p.vector)
            if p.sparse is not None:
                vector = {"": vector, SPARSE_VECTOR: _client_sparse(p.sparse)}
            structs.append(m.PointStruct(id=p.id, vector=vector, payload=dict(p.payload or {})))
        self._call("upsert", collection_name=collection, points=structs, wait=True)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            m = _models()
            self._call(
                "delete",
                collection_name=collection,
                points_selector=m.PointIdsList(points=[str(i) for i in ids]),
                wait=True,
            )

    def scan(
        self,
        collection: str,
        *,
        with_vectors: bool = False,
        with_payload: PayloadFields = True,
        batch: int = 1024,
    ) -> Iterator[PointRecord]:
        name = self._require(collection)
        payload = with_payload if isinstance(with_payload, bool) else list(with_payload)
        offset = None
        while True:
            recs, offset = self._call(
                "scroll",
                collection_name=name,
                limit=batch,
                offset=offset,
                with_payload=payload,
                with_vectors=with_vectors,
            )
            for r in recs:
                yield record_from(r)
            if offset is None:
                return

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[PointRecord]:
        if not ids:
            return []
        name = self._require(collection)
        recs = self._call(
            "retrieve", collection_name=name, ids=[str(i) for i in ids], with_payload=True, with_vectors=with_vectors
        )
        return [record_from(r) for r in recs]

    def count(self, collection: str) -> int:
        name = self._require(collection)
        return int(self._call("count", collection_name=name, exact=True).count)

    def search(
        self,
        collection: str,
        vector: np.ndarray | Sequence[float],
        k: int = 10,
        filter: PayloadFilter | None = None,
        *,
        with_payload: PayloadFields = True,
    ) -> list[Hit]:
        name = self._require(collection)
        res = self._call(
            "query_points",
            collection_name=name,
            query=as_vector(vector),
            limit=k,
            query_filter=_client_filter(filter),
            with_payload=with_payload if isinstance(with_payload, bool) else list(with_payload),
        )
        return [Hit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in res.points]

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
        spec = require_sparse(self, collection)
        m = _models()
        flt = _client_filter(filter)
        limit = prefetch_limit(k, prefetch)
        res = self._call(
            "query_points",
            collection_name=spec.name,
            prefetch=[
                m.Prefetch(query=as_vector(dense_vector), limit=limit, filter=flt),
                m.Prefetch(query=_client_sparse(sparse_query), using=SPARSE_VECTOR, limit=limit, filter=flt),
            ],
            query=m.RrfQuery(rrf=m.Rrf(k=RRF_K)),
            query_filter=flt,
            limit=k,
            with_payload=True,
        )
        return [Hit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in res.points]

    def search_sparse(
        self, collection: str, sparse_query: SparseVector, k: int = 10, filter: PayloadFilter | None = None,
        *, with_payload: PayloadFields = True,
    ) -> list[Hit]:
        """BM25 sparse search alone (for client-side fusion, :mod:`embedline.tasks.vectorsets.fusion`)."""
        spec = require_sparse(self, collection)
        if not len(sparse_query):
            return []
        res = self._call(
            "query_points", collection_name=spec.name, query=_client_sparse(sparse_query),
            using=SPARSE_VECTOR, query_filter=_client_filter(filter), limit=k,
            with_payload=with_payload if isinstance(with_payload, bool) else list(with_payload),
        )
        return [Hit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in res.points]

    def optimize(self, collection: str) -> None:
        """Qdrant (server) indexes in the background by itself; local mode has no index."""

    def close(self) -> None:
        with _clients_lock:
            c = _clients.pop(self._key, None)
        if c is not None:
            c.close()


def _client_sparse(sv: SparseVector) -> Any:
    return _models().SparseVector(indices=list(sv.indices), values=list(sv.values))


def _client_filter(flt: PayloadFilter | None) -> Any:
    if not flt:
        return None
    m = _models()
    conds = []
    for key, value in flt.items():
        match = (
            m.MatchValue(value=value) if isinstance(value, str | int | bool) else m.MatchAny(any=list(value))
        )
        conds.append(m.FieldCondition(key=key, match=match))
    return m.Filter(must=conds)


def local_store(path: str | Path, *, max_retries: int = 0) -> QdrantClientStore:
    p = str(Path(path).resolve())
    Path(p).mkdir(parents=True, exist_ok=True)
    return QdrantClientStore(
        backend="local", key=("local", p), client_kwargs={"path": p}, max_parallel=1, max_retries=max_retries
    )


def server_store(
    url: str,
    *,
    api_key_env: str = "QDRANT_API_KEY",
    prefer_grpc: bool = False,
    parallel: int = 2,
    max_retries: int = 5,
    timeout: int = 60,
) -> QdrantClientStore:
    api_key = os.environ.get(api_key_env) or None
    return QdrantClientStore(
        backend="server",
        key=("server", url, str(prefer_grpc), api_key_env),
        client_kwargs={"url": url, "api_key": api_key, "prefer_grpc": prefer_grpc, "timeout": timeout},
        max_parallel=parallel,
        max_retries=max_retries,
    )
