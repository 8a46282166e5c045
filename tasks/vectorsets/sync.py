"""The desired state of a vector set and the plan that takes a store there.

Desired state = one point per row of deduped.parquet: id = uuid5(chunk id), vector = its row of
vectors.npy, payload built by :func:`build_payload` with a ``payload_hash`` over everything else in
the payload. The store's state is read back as ``id -> payload_hash`` (a scan with only that field).
:func:`compute_plan` is a pure function of the two: adds, updates (hash differs or missing), deletes
and the unchanged count. Upserts go first and deletes last, so a changed document never has zero
vectors in between.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.batching import pack
from embedline.tasks.config import stable_hash
from embedline.tasks.vectorsets.base import PointRecord

PAYLOAD_HASH = "payload_hash"
VECTOR_JSON_BYTES = 20  # a float32 as JSON text in a REST request, generously
SPARSE_ENTRY_BYTES = 32  # one sparse (index, value) pair as JSON text
POINT_OVERHEAD_BYTES = 128


def payload_hash(payload: Mapping[str, Any]) -> str:
    return stable_hash({k: v for k, v in payload.items() if k != PAYLOAD_HASH})[:16]


def build_payload(row: Mapping[str, Any], *, fingerprint: str, model: str) -> dict[str, Any]:
    """The Qdrant payload of one deduped row (see tasks.dedupe for the duplicate fields)."""
    payload: dict[str, Any] = {
        "text": row["text"],
        "source": row["source"],
        "sources": json.loads(row["sources"] or "[]"),
        "doc_id": row["doc_id"],
        "chunk_id": row["chunk_id"],
        "chunk_index": row["chunk_index"],
        "title": row["title"],
        "heading_path": list(row["heading_path"] or ()),
        "char_start": row["char_start"],
        "char_end": row["char_end"],
        "token_count": row["token_count"],
        "text_hash": row["text_hash"],
        "fingerprint": fingerprint,
        "model": model,
        "duplicates": json.loads(row["duplicates"] or "[]"),
        "is_duplicate": bool(row["is_duplicate"]),
        "canonical_id": row["canonical_id"],
    }
    meta = json.loads(row.get("metadata") or "{}")
    if meta:
        payload["metadata"] = meta
    payload[PAYLOAD_HASH] = payload_hash(payload)
    return payload


@dataclass(frozen=True)
class DesiredPoint:
    id: str
    row: int
    payload: dict[str, Any]


def iter_desired(
    deduped: Path, *, fingerprint: str, model: str, batch_rows: int = 2048
) -> Iterator[list[DesiredPoint]]:
    """Batches of desired points, streamed from deduped.parquet."""
    import pyarrow.parquet as pq  # here: a search imports this module and never reads Parquet

    pf = pq.ParquetFile(deduped)
    for batch in pf.iter_batches(batch_size=batch_rows):
        yield [
            DesiredPoint(r["point_id"], int(r["row"]), build_payload(r, fingerprint=fingerprint, model=model))
            for r in batch.to_pylist()
        ]


def desired_hashes(deduped: Path, *, fingerprint: str, model: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for batch in iter_desired(deduped, fingerprint=fingerprint, model=model):
        for p in batch:
            if p.id in out:
                raise ValueError(f"{deduped}: point id {p.id} appears twice (chunk ids must be unique)")
            out[p.id] = p.payload[PAYLOAD_HASH]
    return out


@dataclass(frozen=True)
class SyncPlan:
    """What a sync will do. ``adds``/``updates``/``deletes`` are sorted point ids."""

    adds: tuple[str, ...]
    updates: tuple[str, ...]
    deletes: tuple[str, ...]
    unchanged: int
    existing: int  # points in the target collection now
    desired: int  # points it should hold
    collection: str = ""
    alias: str = ""
    live_collection: str | None = None
    new_vector_set: bool = False  # the target is not the alias' current collection
    texts_to_embed: int | None = None  # unique texts not in the embedding cache (None: unknown)
    tokens_to_embed: int | None = None  # their tokens, for API providers
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def delete_fraction(self) -> float:
        return len(self.deletes) / self.existing if self.existing else 0.0

    @property
    def changes(self) -> int:
        return len(self.adds) + len(self.updates) + len(self.deletes)

    def counts(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("adds", "updates", "deletes"):
            d[k] = len(d[k])
        d.update(d.pop("extra"))
        return d


def compute_plan(desired: Mapping[str, str], existing: Mapping[str, str | None]) -> SyncPlan:
    """Pure diff of ``id -> payload_hash`` maps (an existing point without a hash is stale)."""
    adds = sorted(k for k in desired if k not in existing)
    updates = sorted(k for k, h in desired.items() if k in existing and existing[k] != h)
    deletes = sorted(k for k in existing if k not in desired)
    unchanged = len(desired) - len(adds) - len(updates)
    return SyncPlan(
        adds=tuple(adds),
        updates=tuple(updates),
        deletes=tuple(deletes),
        unchanged=unchanged,
        existing=len(existing),
        desired=len(desired),
    )


def point_bytes(payload: Mapping[str, Any], dims: int) -> int:
    """Estimated request bytes of one point (JSON payload + vector as JSON text)."""
    return len(json.dumps(payload, ensure_ascii=False)) + dims * VECTOR_JSON_BYTES + POINT_OVERHEAD_BYTES


def batched(
    points: Iterable[PointRecord], *, max_points: int, max_bytes: int, dims: int
) -> Iterator[list[PointRecord]]:
    """Cut a point stream into requests of at most ``max_points`` points and ``max_bytes`` bytes
    (a single point bigger than ``max_bytes`` goes alone: the store reports it if it is too big)."""

    def weight(p: PointRecord) -> int:
        return point_bytes(p.payload or {}, dims) + (len(p.sparse) * SPARSE_ENTRY_BYTES if p.sparse else 0)

    return pack(points, weight, max_items=max_points, max_weight=max_bytes)


def chunks_of(ids: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    for s in range(0, len(ids), n):
        yield ids[s : s + n]


def sample_ids(ids: Sequence[str], k: int) -> list[str]:
    """A deterministic, evenly spread sample of ``k`` ids (sorted order)."""
    ordered = sorted(ids)
    if k <= 0 or not ordered:
        return []
    if k >= len(ordered):
        return ordered
    pick = np.linspace(0, len(ordered) - 1, k).round().astype(int)
    return [ordered[i] for i in sorted(set(pick.tolist()))]
