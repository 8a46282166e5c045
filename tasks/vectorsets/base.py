"""The vector-store interface: one Protocol, its value types and its errors.

A :class:`VectorStore` is a connection to one Qdrant *instance* (an embedded directory or a server)
holding many physical collections and aliases. Data operations take the collection name first; a
name that is an alias is resolved by the store, so callers can read through the live alias.
Every backend (Qdrant Edge, qdrant-client local mode, a Qdrant server) passes the same test suite
(tests/integration/test_store.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Distance = Literal["Cosine", "Dot", "Euclid"]
Quantization = Literal["none", "scalar", "binary"]
# Equality filter on payload keys: {"doc_id": "abc"} or {"source": ["a.md", "b.md"]} (match any).
PayloadFilter = Mapping[str, "str | int | bool | Sequence[str] | Sequence[int]"]
PayloadFields = bool | Sequence[str]

SPARSE_VECTOR = "bm25"  # name of the optional sparse vector; the dense vector is the unnamed default
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009), the same on every backend


@dataclass(frozen=True)
class VectorSetSpec:
    """What a physical collection holds. ``metadata`` (fingerprint, model, created_at, ...) is stored
    with the collection so a vector set can be described, exported and moved without its artifacts."""

    name: str
    dims: int
    distance: Distance = "Cosine"
    on_disk: bool = False
    quantization: Quantization = "none"
    payload_indexes: tuple[str, ...] = ("doc_id",)  # keyword-indexed payload fields (qdrant.payload_indexes)
    hnsw_m: int = 16
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # also holds the named sparse vector SPARSE_VECTOR (BM25 term weights; Qdrant applies the IDF)
    sparse: bool = False


@dataclass(frozen=True)
class SparseVector:
    """Term weights keyed by term index (a backend-neutral twin of Qdrant's SparseVector)."""

    indices: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise ValueError(f"sparse vector has {len(self.indices)} indices but {len(self.values)} values")

    def __len__(self) -> int:
        return len(self.indices)

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.indices, self.values, strict=True))


@dataclass(frozen=True)
class PointRecord:
    id: str  # a UUID string (point ids are uuid5 of the chunk id)
    vector: np.ndarray | None = None  # float32, shape (dims,)
    payload: Mapping[str, Any] | None = None
    sparse: SparseVector | None = None  # only for collections with ``VectorSetSpec.sparse``
    size_hint: int = 0  # estimated request bytes when the producer knows them (batching), else 0
    # the payload is already in the store's own layout (``VectorStore.pack_columns`` built it)
    packed: bool = False


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: Mapping[str, Any]

    @property
    def source(self) -> str:
        return str(self.payload.get("source", ""))

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))


class StoreError(RuntimeError):
    """A store operation that cannot succeed as asked (missing collection, bad alias, ...)."""


class CollectionNotFoundError(StoreError, KeyError):
    def __str__(self) -> str:
        return f"collection or alias {self.args[0]!r} does not exist"


class VectorSetMismatchError(StoreError):
    """An existing collection holds a different vector space (dims, distance, model)."""


class SparseVectorMissingError(StoreError):
    """A hybrid search on a collection built without the sparse vector."""

    def __init__(self, collection: str):
        self.collection = collection
        super().__init__(
            f"collection {collection!r} has no sparse vector {SPARSE_VECTOR!r}, so it cannot answer a hybrid "
            "query: build it with qdrant.sparse=true (a new vector set: re-run the upsert, e.g. "
            "`embedline ingest --set qdrant.sparse=true`), or search in dense mode"
        )


@runtime_checkable
class VectorStore(Protocol):
    """Qdrant, whatever the backend. Methods are synchronous and acknowledged (``wait=True``)."""

    backend: str
    max_parallel: int  # concurrent upload streams this backend benefits from

    def ensure(self, vector_set: VectorSetSpec) -> bool:
        """Create the collection (+ payload indexes) if missing; True if created. An existing one
        with other dims/distance raises :class:`VectorSetMismatchError`."""
        ...

    def describe(self, collection: str) -> VectorSetSpec | None:
        """The spec (with stored metadata) of a collection or alias target; None if missing."""
        ...

    def upsert(self, collection: str, points: Sequence[PointRecord]) -> None: ...

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    def scan(
        self,
        collection: str,
        *,
        with_vectors: bool = False,
        with_payload: PayloadFields = True,
        batch: int = 1024,
    ) -> Iterator[PointRecord]:
        """Every point, in batched scrolls (memory stays bounded)."""
        ...

    def retrieve(
        self, collection: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[PointRecord]:
        """Points that exist among ``ids`` (missing ids are left out)."""
        ...

    def count(self, collection: str) -> int: ...

    def search(
        self,
        collection: str,
        vector: np.ndarray | Sequence[float],
        k: int = 10,
        filter: PayloadFilter | None = None,
        *,
        with_payload: PayloadFields = True,
    ) -> list[Hit]:
        """The ``k`` nearest points; ``with_payload`` = True, False or the payload keys to return
        (evaluation asks only for the source keys: full payloads cost most of a search)."""
        ...

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
        """Fused dense + sparse search, server-side (Qdrant's query API): the ``prefetch`` best
        (default ``2 * k``) of each, merged by reciprocal rank fusion (:data:`RRF_K`); hit scores
        are RRF scores. A collection without the sparse vector raises
        :class:`SparseVectorMissingError`."""
        ...

    def search_sparse(
        self, collection: str, sparse_query: SparseVector, k: int = 10, filter: PayloadFilter | None = None,
        *, with_payload: PayloadFields = True,
    ) -> list[Hit]:
        """The BM25 sparse vector alone (scores are Qdrant's IDF-weighted dot products); a
        collection without the sparse vector raises :class:`SparseVectorMissingError`."""
        ...

    def optimize(self, collection: str) -> None:
        """Build indexes after a bulk load where the backend needs to be told (Edge); else no-op."""
        ...

    def list_collections(self) -> list[str]:
        """Physical collection names (aliases not included), sorted."""
        ...

    def drop_collection(self, name: str) -> None: ...

    def get_alias(self, alias: str) -> str | None: ...

    def list_aliases(self) -> dict[str, str]: ...

    def swap_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` atomically (readers see the old or the new one)."""
        ...

    def delete_alias(self, alias: str) -> None:
        """Remove ``alias`` (its collection stays); no-op if it does not exist."""
        ...

    def close(self) -> None: ...


# ---- optional abilities: a store that has one is used through it, the others take the plain path ----
@runtime_checkable
class PreparedWrites(Protocol):
    """Build a write request in the caller's thread and send it from another (Edge: building holds
    the GIL, writing releases it; :func:`~embedline.tasks.vectorsets.lifecycle.write_points`)."""

    def prepare(self, points: Sequence[PointRecord]) -> Any: ...

    def write_prepared(self, collection: str, prepared: Any) -> None: ...


@runtime_checkable
class ColumnPacking(Protocol):
    """Payloads built column-wise from a deduped batch, in the store's own stored layout."""

    def pack_columns(
        self, cols: Mapping[str, list[Any]], *, fingerprint: str, model: str, known_hashes: Sequence[str | None]
    ) -> list[dict[str, Any]]: ...


@runtime_checkable
class PageRelease(Protocol):
    """Give back the memory-mapped pages a bulk write touched (the upsert calls it between requests)."""

    def release_pages(self) -> None: ...


@runtime_checkable
class FieldScan(Protocol):
    """``(id, payload[field])`` of every point, cheaper than :meth:`VectorStore.scan`."""

    def scan_field(self, collection: str, field: str, *, batch: int = 2048) -> Iterator[tuple[str, Any]]: ...


@runtime_checkable
class FieldRecord(Protocol):
    """A record of ``(id, payload[field])`` written after a sync made the collection equal its
    desired state, read by the next sync instead of a scan, and void after any other write."""

    def record_field(self, collection: str, field: str, pairs: Iterator[tuple[str, str]]) -> None: ...

    def recorded_field(self, collection: str, field: str) -> Iterator[tuple[str, str]] | None: ...


def require_sparse(store: VectorStore, collection: str) -> VectorSetSpec:
    """The spec of ``collection`` if it can answer hybrid queries; else a clear error."""
    spec = store.describe(collection)
    if spec is None:
        raise CollectionNotFoundError(collection)
    if not spec.sparse:
        raise SparseVectorMissingError(spec.name)
    return spec


def record_from(r: Any) -> PointRecord:
    """A :class:`PointRecord` from a Qdrant record (qdrant-client or Qdrant Edge: same shape)."""
    vec, sparse = r.vector, None
    if isinstance(vec, dict):
        sv = vec.get(SPARSE_VECTOR)
        sparse = None if sv is None else SparseVector(tuple(sv.indices), tuple(sv.values))
        vec = vec.get("")
    return PointRecord(
        id=str(r.id),
        vector=None if vec is None else np.asarray(vec, dtype=np.float32),
        payload=r.payload,
        sparse=sparse,
    )


def as_vector(v: np.ndarray | Sequence[float]) -> list[float]:
    if isinstance(v, list):  # already converted (a whole batch at once: one C call, not one per point)
        return v
    return np.asarray(v, dtype=np.float32).reshape(-1).tolist()


def prefetch_limit(k: int, prefetch: int | None) -> int:
    """Candidates each branch of a hybrid query contributes (never fewer than ``k``)."""
    return max(k, prefetch if prefetch is not None else 2 * k)


def check_compatible(existing: VectorSetSpec, wanted: VectorSetSpec) -> None:
    """Raise a clear error when ``wanted`` would mix two vector spaces in ``existing``."""
    problems = []
    if existing.dims != wanted.dims:
        problems.append(f"dims {existing.dims} != {wanted.dims}")
    if existing.distance != wanted.distance:
        problems.append(f"distance {existing.distance} != {wanted.distance}")
    if existing.sparse != wanted.sparse:
        problems.append(f"sparse vector {SPARSE_VECTOR!r} {'present' if existing.sparse else 'absent'} != "
                        f"{'present' if wanted.sparse else 'absent'}")
    for key in ("fingerprint", "model"):
        a, b = existing.metadata.get(key), wanted.metadata.get(key)
        if a is not None and b is not None and a != b:
            problems.append(f"{key} {a!r} != {b!r}")
    if problems:
        raise VectorSetMismatchError(
            f"collection {existing.name!r} already holds another vector space ({'; '.join(problems)}); "
            "refusing to mix vector spaces in one collection: use a new collection name "
            "(the fingerprint changes with the model) or drop the old collection"
        )
