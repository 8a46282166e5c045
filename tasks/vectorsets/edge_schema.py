"""How embedline's store types become Qdrant Edge objects: the shard config of a
:class:`VectorSetSpec` (dense vector, optional sparse ``SPARSE_VECTOR`` with Qdrant's IDF modifier,
quantisation, HNSW, memory placement), payload filters and sparse vectors. ``qdrant_edge`` is
imported on first use."""

from __future__ import annotations

from typing import Any

from embedline.tasks.vectorsets.base import (
    SPARSE_VECTOR,
    PayloadFilter,
    SparseVector,
    VectorSetSpec,
)


def _qe() -> Any:  # untyped on purpose: the stubs' invariant lists reject plain list literals
    import qdrant_edge

    return qdrant_edge


def edge_config(spec: VectorSetSpec) -> Any:
    qe = _qe()
    quant = {
        "none": None,
        "scalar": lambda: qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True),
        "binary": lambda: qe.BinaryQuantizationConfig(always_ram=True),
    }[spec.quantization]
    memory = qe.Memory.Cold if spec.on_disk else qe.Memory.Cached
    sparse_memory = qe.Memory.Cold if spec.on_disk else None
    sparse = (
        {SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf, memory=sparse_memory)}
        if spec.sparse
        else None
    )
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(
            size=spec.dims,
            distance=getattr(qe.Distance, spec.distance),
            memory=memory,
            quantization_config=quant() if quant else None,
        ),
        sparse_vectors=sparse,
        hnsw_config=qe.HnswIndexConfig(m=spec.hnsw_m, ef_construct=100, full_scan_threshold=10_000),
        payload_memory=qe.Memory.Cold if spec.on_disk else qe.Memory.Cached,
    )


def edge_sparse(sv: SparseVector) -> Any:
    qe = _qe()
    return qe.SparseVector(list(sv.indices), list(sv.values))


def edge_filter(flt: PayloadFilter | None) -> Any:
    if not flt:
        return None
    qe = _qe()
    conds = []
    for key, value in flt.items():
        if isinstance(value, str | int | bool):
            conds.append(qe.FieldCondition(key, match=qe.MatchValue(value)))
        else:
            conds.append(qe.FieldCondition(key, match=qe.MatchAny(list(value))))
    return qe.Filter(must=conds)
