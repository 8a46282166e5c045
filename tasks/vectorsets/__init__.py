"""Everything about vector sets: stores, the sync plan, building, promoting, verifying, moving, searching.

A *vector set* is one physical Qdrant collection named by its fingerprint
(``f"{qdrant.collection}-{fingerprint}"``); the alias ``qdrant.collection`` is what is served.

Map (one concept per module; layers inside point down: the stage modules use the store protocol,
never a backend directly):

=================  ===================================================================================
``base``           the store protocol :class:`VectorStore` + records (``PointRecord``, ``Hit``,
                   ``VectorSetSpec``) and store errors
``stores``         the backend registry: ``STORES``, :func:`open_store`, :func:`close_stores`
``edge``           Qdrant Edge, embedded (default backend); ``edge_schema`` its collection config
``qdrant``         qdrant-client: local mode (``qdrant.backend=local``) and servers (``qdrant.url``)
``retry``          transient store errors and the retry policy for store calls
``sparse``         the BM25 sparse vector (hybrid search)
``sync``           desired state (``id -> payload hash``) and the pure plan: adds, updates, deletes
``lifecycle``      context, batched writes, validation read-back, alias swap, version retention
``upsert``         the ``upsert`` stage and the commands built on it: plan, verify, search
``transfer``       export / import of a vector set to / from a file
=================  ===================================================================================

Importing this package is cheap: backends import their client libraries on first use.
"""

from embedline.tasks.vectorsets.stores import (
    SPARSE_VECTOR,
    STORES,
    CollectionNotFoundError,
    Hit,
    PayloadFilter,
    PointRecord,
    SparseVector,
    SparseVectorMissingError,
    StoreError,
    StoreFactory,
    VectorSetMismatchError,
    VectorSetSpec,
    VectorStore,
    close_stores,
    open_store,
)

__all__ = [
    "SPARSE_VECTOR",
    "STORES",
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
