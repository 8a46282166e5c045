"""The Qdrant payload of one deduplicated row and its ``payload_hash`` (one implementation).

The dedupe stage stores each row's ``payload_hash`` in the deduped shards (it knows the fingerprint
and model from the manifest), so a sync diffs two columns against the store instead of rebuilding
every payload; the upsert builds payloads only for the points it writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from embedline.tasks.config import stable_hash

PAYLOAD_HASH = "payload_hash"


def payload_hash(payload: Mapping[str, Any]) -> str:
    return stable_hash({k: v for k, v in payload.items() if k != PAYLOAD_HASH})[:16]


def build_payload(
    row: Mapping[str, Any], *, fingerprint: str, model: str, known_hash: str | None = None
) -> dict[str, Any]:
    """The Qdrant payload of one deduped row (see tasks.dedupe for the duplicate fields).
    ``known_hash``: the row's payload hash as the dedupe stage recorded it for this fingerprint and
    model (saves re-hashing every payload on the write path)."""
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
    payload[PAYLOAD_HASH] = known_hash or payload_hash(payload)
    return payload
