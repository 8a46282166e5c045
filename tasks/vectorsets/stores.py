"""Vector stores behind one interface, picked by ``qdrant.backend``.

Public API::

    open_store(params: QdrantParams, root: Path = Path(".")) -> VectorStore
    STORES                       registry: backend name -> factory(params, root)
    VectorStore, VectorSetSpec, PointRecord, Hit, PayloadFilter, SparseVector
    StoreError, CollectionNotFoundError, VectorSetMismatchError, SparseVectorMissingError
    close_stores()               close every client/shard this process opened (tests, shutdown)

Hybrid search: a collection built with ``VectorSetSpec.sparse`` also holds the named sparse vector
``SPARSE_VECTOR`` ("bm25"; BM25 term weights from :mod:`embedline.tasks.vectorsets.sparse`, IDF applied by Qdrant)
and answers ``search_hybrid`` (dense + sparse prefetch fused by RRF, server-side).

Backends: ``edge`` (default; Qdrant Edge embedded, :mod:`embedline.tasks.vectorsets.edge`), ``local``
(qdrant-client local mode) and ``server`` (qdrant-client against ``qdrant.url``); the last two share
:class:`embedline.tasks.vectorsets.qdrant.QdrantClientStore`. Nothing heavy is imported until a store is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from embedline.tasks.config import QdrantParams
from embedline.tasks.vectorsets.base import (
    SPARSE_VECTOR,
    CollectionNotFoundError,
    Hit,
    PayloadFilter,
    PointRecord,
    SparseVector,
    SparseVectorMissingError,
    StoreError,
    VectorSetMismatchError,
    VectorSetSpec,
    VectorStore,
)

StoreFactory = Callable[[QdrantParams, Path], VectorStore]


def _edge(params: QdrantParams, root: Path) -> VectorStore:
    from embedline.tasks.vectorsets.edge import EdgeStore

    return EdgeStore(_path(params, root), index_threshold=params.index_threshold)


def _local(params: QdrantParams, root: Path) -> VectorStore:
    from embedline.tasks.vectorsets.qdrant import local_store

    return local_store(_path(params, root), max_retries=0)


def _server(params: QdrantParams, root: Path) -> VectorStore:
    from embedline.tasks.vectorsets.qdrant import server_store

    if not params.url:
        raise StoreError("qdrant.backend=server needs qdrant.url (e.g. http://localhost:6333)")
    return server_store(
        params.url,
        api_key_env=params.api_key_env,
        prefer_grpc=params.prefer_grpc,
        parallel=params.parallel,
        max_retries=params.max_retries,
    )


def _path(params: QdrantParams, root: Path) -> Path:
    p = Path(params.path)
    return p if p.is_absolute() else root / p


STORES: dict[str, StoreFactory] = {"edge": _edge, "local": _local, "server": _server}
# What each backend imports on first use: loaded ahead by pipeline.warm_later while the model computes
# (qdrant-client alone is ~1 s of imports, pydantic models for its whole HTTP API)
STORE_MODULES: dict[str, tuple[str, ...]] = {
    "edge": ("embedline.tasks.vectorsets.edge", "qdrant_edge"),
    "local": ("embedline.tasks.vectorsets.qdrant", "qdrant_client", "qdrant_client.local.qdrant_local"),
    "server": ("embedline.tasks.vectorsets.qdrant", "qdrant_client"),
}


def open_store(params: QdrantParams, root: Path | str = Path(".")) -> VectorStore:
    """The store for ``params`` (cheap: clients and shards open on first use, once per process)."""
    try:
        factory = STORES[params.backend]
    except KeyError:
        raise StoreError(
            f"unknown qdrant.backend {params.backend!r}; valid: {', '.join(sorted(STORES))}"
        ) from None
    return factory(params, Path(root))


def close_stores() -> None:
    """Close every shard and client opened by this process."""
    import sys

    edge = sys.modules.get("embedline.tasks.vectorsets.edge")
    if edge is not None:
        with edge._shards_lock:
            for d in list(edge._shards):
                shard = edge._shards.pop(d)
                shard.flush()
                shard.close()
    qd = sys.modules.get("embedline.tasks.vectorsets.qdrant")
    if qd is not None:
        with qd._clients_lock:
            clients = list(qd._clients.values())
            qd._clients.clear()
        for c in clients:
            c.close()


__all__ = [
    "SPARSE_VECTOR",
    "STORES",
    "STORE_MODULES",
    "CollectionNotFoundError",
    "Hit",
    "PayloadFilter",
    "PointRecord",
    "SparseVector",
    "SparseVectorMissingError",
    "StoreError",
    "StoreFactory",
    "VectorSetMismatchError",
    "VectorSetSpec",
    "VectorStore",
    "close_stores",
    "open_store",
]
