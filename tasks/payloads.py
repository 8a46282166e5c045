"""The Qdrant payload of one deduplicated row and its ``payload_hash`` (one implementation).

The dedupe stage stores each row's ``payload_hash`` in the deduped shards (it knows the fingerprint
and model from the manifest), so a sync diffs two columns against the store instead of rebuilding
every payload; the upsert builds payloads only for the points it writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

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
    cols = {k: [row.get(k)] for k in _FIELDS}
    return build_payloads(cols, fingerprint=fingerprint, model=model, known_hashes=[known_hash])[0]


_FIELDS = ("text", "source", "sources", "doc_id", "chunk_id", "chunk_index", "title", "heading_path", "char_start",
           "char_end", "token_count", "text_hash", "duplicates", "is_duplicate", "canonical_id", "metadata")


def json_column(values: list[str | None], empty: str) -> list[Any]:
    """Parse a column of JSON texts in one call (one ``orjson.loads`` of the joined array: the same
    values as ``json.loads``, several times faster)."""
    text = "[" + ",".join(v or empty for v in values) + "]"
    try:
        return orjson.loads(text)  # type: ignore[no-any-return]
    except orjson.JSONDecodeError:  # NaN / Infinity: what only json wrote
        return json.loads(text)  # type: ignore[no-any-return]


def build_payloads(
    cols: Mapping[str, list[Any]], *, fingerprint: str, model: str, known_hashes: list[str | None] | None = None
) -> list[dict[str, Any]]:
    """:func:`build_payload` for a whole column batch (``cols``: a deduped table's ``to_pydict()``);
    the JSON columns are parsed once per batch, not once per row. Same payloads, same hashes."""
    n = len(cols["chunk_id"])
    sources = json_column(cols["sources"], "[]")
    duplicates = json_column(cols["duplicates"], "[]")
    metas = json_column(cols["metadata"], "{}")
    out = []
    for k in range(n):
        payload: dict[str, Any] = {
            "text": cols["text"][k],
            "source": cols["source"][k],
            "sources": sources[k],
            "doc_id": cols["doc_id"][k],
            "chunk_id": cols["chunk_id"][k],
            "chunk_index": cols["chunk_index"][k],
            "title": cols["title"][k],
            "heading_path": list(cols["heading_path"][k] or ()),
            "char_start": cols["char_start"][k],
            "char_end": cols["char_end"][k],
            "token_count": cols["token_count"][k],
            "text_hash": cols["text_hash"][k],
            "fingerprint": fingerprint,
            "model": model,
            "duplicates": duplicates[k],
            "is_duplicate": bool(cols["is_duplicate"][k]),
            "canonical_id": cols["canonical_id"][k],
        }
        if metas[k]:
            payload["metadata"] = metas[k]
        known = known_hashes[k] if known_hashes is not None else None
        payload[PAYLOAD_HASH] = known or payload_hash(payload)
        out.append(payload)
    return out
