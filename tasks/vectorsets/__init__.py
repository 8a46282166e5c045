"""Everything about vector sets: stores, the sync plan, building, promoting, verifying, moving, searching.

A *vector set* is one physical Qdrant collection named by its fingerprint
(``f"{qdrant.collection}-{fingerprint}"``); the alias ``qdrant.collection`` is what is served.

Build vs promote: *building* a vector set (the ``upsert`` stage, :mod:`.build`) is always safe, any
run may do it; *serving* it (the alias swap, :mod:`.promote`) happens only for the recorded
configuration (params.yaml as is, not an override run, not ``dvc exp run``) or on request
(``embedline promote``), after the quality gate. ``verify`` says whether what is served is what
the workspace records.

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
``source``         the only reader of the workspace's artifacts (deduped + vector shards); the on-disk sync diff
``lifecycle``      context, batched writes, validation read-back, version retention
``build``          the ``upsert`` stage: sync + validate the fingerprinted collection, the receipt;
                   ``plan`` (what a build would do)
``promote``        the ``promote`` stage and ``embedline promote``: gate (tasks.evaluation.gate,
                   imported here only), alias swap, retention; ``serving_decision``
``verify``         served == recorded? recorded set == artifacts? (``--repair``); ``served_state``
``search``         query the served alias (dense / hybrid); ``served`` names what answered
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
