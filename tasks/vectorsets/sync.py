"""The desired state of a vector set and the plan that takes a store there.

Desired state = one point per row of the deduped shards: id = uuid5(chunk id), vector = its row of
the vector shard of the same index, payload built by :func:`build_payload` with a ``payload_hash``
over everything else in the payload. The store's state is read back as ``id -> payload_hash`` (a
scan with only that field). :func:`compute_plan` is the pure diff of the two (adds, updates: hash
differs or missing, deletes, the unchanged count) on in-memory maps; the stages run the same diff
on disk (:class:`embedline.tasks.vectorsets.source.SyncState`, tested against this function). Upserts go first and deletes last, so a changed document never has zero
vectors in between.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from embedline.tasks.batching import pack
from embedline.tasks.payloads import PAYLOAD_HASH, build_payload, payload_hash  # noqa: F401 (re-exported)
from embedline.tasks.vectorsets.base import PointRecord

VECTOR_JSON_BYTES = 20  # a float32 as JSON text in a REST request, generously
SPARSE_ENTRY_BYTES = 32  # one sparse (index, value) pair as JSON text
POINT_OVERHEAD_BYTES = 128


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
        if p.size_hint:
            return p.size_hint
        return point_bytes(p.payload or {}, dims) + (len(p.sparse) * SPARSE_ENTRY_BYTES if p.sparse else 0)

    return pack(points, weight, max_items=max_points, max_weight=max_bytes)


def sample_ids(ids: Sequence[str], k: int) -> list[str]:
    """A deterministic, evenly spread sample of ``k`` ids (sorted order)."""
    ordered = sorted(ids)
    if k <= 0 or not ordered:
        return []
    if k >= len(ordered):
        return ordered
    pick = np.linspace(0, len(ordered) - 1, k).round().astype(int)
    return [ordered[i] for i in sorted(set(pick.tolist()))]
