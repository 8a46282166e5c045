"""How embedline's store types become Qdrant Edge objects: the shard config of a
:class:`VectorSetSpec` (dense vector, optional sparse ``SPARSE_VECTOR`` with Qdrant's IDF modifier,
quantisation, HNSW, memory placement), payload filters, sparse vectors and payloads.
``qdrant_edge`` is imported on first use.

Payloads are stored *packed*: qdrant-edge-py 0.9 converts every payload value between Python and
Rust one by one, at ~2 us per number and ~5.5 us per string, list or dict node (measured), so a point
with embedline's payload (16 keys, ``sources`` entries, ``metadata``...) cost ~290 us to construct,
several times what the engine needs to store it. A few top-level keys stay as they are
(:data:`FLAT_FIELDS`: the payload hash the sync scans, and the keys a
:data:`~embedline.tasks.vectorsets.base.PayloadFilter` may match: ``doc_id``, ``source``,
``chunk_id``, ``is_duplicate``, the default payload indexes among them); the rest of the payload goes
into one JSON string under :data:`PACKED_KEY` (one C-speed ``json`` call). :func:`unpack_payload`
restores the payload on every read (scan, retrieve, search), and reads points written unpacked as
they are. A filter on another key raises :class:`StoreError` rather than match nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from embedline.tasks.payloads import build_payloads, json_column
from embedline.tasks.vectorsets.base import (
    SPARSE_VECTOR,
    PayloadFilter,
    SparseVector,
    StoreError,
    VectorSetSpec,
)

PACKED_KEY = "_packed"  # JSON text of the payload's other keys
FLAT_FIELDS = frozenset({"payload_hash", "doc_id", "source", "chunk_id", "is_duplicate"})
# flat booleans are stored as 0/1: qdrant-edge-py 0.9 turns a Python bool in ``MatchValue`` into an
# integer match, which never matches a stored JSON boolean (a filter on them matched nothing)
BOOL_FIELDS = frozenset({"is_duplicate"})
_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dumps(obj: dict[str, Any]) -> str:
    try:
        return orjson.dumps(obj).decode("utf-8")  # ~5x json's C encoder on these payloads
    except (orjson.JSONEncodeError, UnicodeDecodeError):  # ints past 64 bits, non-str keys, lone surrogates
        return _json_dumps(obj)


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what only json wrote (NaN): read it back the same way
        return json.loads(text)


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
        if key not in FLAT_FIELDS:
            raise StoreError(f"payload filter on {key!r}: the embedded store filters on {sorted(FLAT_FIELDS)} "
                             f"only (the rest of a payload is stored packed under {PACKED_KEY!r})")
        if isinstance(value, bool):
            conds.append(qe.FieldCondition(key, match=qe.MatchValue(int(value))))  # see BOOL_FIELDS
        elif isinstance(value, str | int):
            conds.append(qe.FieldCondition(key, match=qe.MatchValue(value)))
        else:
            conds.append(qe.FieldCondition(key, match=qe.MatchAny(list(value))))
    return qe.Filter(must=conds)


def pack_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """``payload`` with every key but :data:`FLAT_FIELDS` moved into one JSON string (module doc)."""
    if not payload:
        return {}
    flat: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for k, v in payload.items():
        if k in BOOL_FIELDS and isinstance(v, bool):
            v = int(v)
        (flat if k in FLAT_FIELDS else rest)[k] = v
    if rest:
        flat[PACKED_KEY] = _dumps(rest)
    return flat


def pack_columns(
    cols: Mapping[str, list[Any]], *, fingerprint: str, model: str, known_hashes: Sequence[str | None]
) -> list[dict[str, Any]]:
    """``[pack_payload(p) for p in build_payloads(cols, ...)]`` in one pass over the columns (the
    upsert's write path): no intermediate 17-key payload and no per-key split, the same dicts and
    the same packed JSON text (key order included). A row without a recorded payload hash takes the
    general path (its hash is computed over the full payload)."""
    sources = json_column(cols["sources"], "[]")
    duplicates = json_column(cols["duplicates"], "[]")
    metas = json_column(cols["metadata"], "{}")
    out: list[dict[str, Any]] = []
    rows = zip(cols["text"], cols["source"], sources, cols["doc_id"], cols["chunk_id"], cols["chunk_index"],
               cols["title"], cols["heading_path"], cols["char_start"], cols["char_end"], cols["token_count"],
               cols["text_hash"], duplicates, cols["is_duplicate"], cols["canonical_id"], metas, known_hashes,
               strict=True)
    for k, (text, source, srcs, doc_id, chunk_id, index, title, heading, start, end, tokens, text_hash, dups,
            is_dup, canonical, meta, known) in enumerate(rows):
        if not known:
            one = {c: [cols[c][k]] for c in _PAYLOAD_COLUMNS}
            out.append(pack_payload(build_payloads(one, fingerprint=fingerprint, model=model)[0]))
            continue
        rest = {"text": text, "sources": srcs, "chunk_index": index, "title": title,
                "heading_path": list(heading or ()), "char_start": start, "char_end": end, "token_count": tokens,
                "text_hash": text_hash, "fingerprint": fingerprint, "model": model, "duplicates": dups,
                "canonical_id": canonical}
        if meta:
            rest["metadata"] = meta
        # is_duplicate: one of BOOL_FIELDS, stored as 0/1 (as pack_payload does)
        out.append({"source": source, "doc_id": doc_id, "chunk_id": chunk_id, "is_duplicate": int(bool(is_dup)),
                    "payload_hash": known, PACKED_KEY: _dumps(rest)})
    return out


_PAYLOAD_COLUMNS = ("text", "source", "sources", "doc_id", "chunk_id", "chunk_index", "title", "heading_path",
                    "char_start", "char_end", "token_count", "text_hash", "duplicates", "is_duplicate",
                    "canonical_id", "metadata")


def unpack_payload(payload: Mapping[str, Any] | None, fields: Sequence[str] | None = None) -> dict[str, Any]:
    """The payload :func:`pack_payload` packed (a payload without :data:`PACKED_KEY` as it is);
    ``fields``: keep only these keys (what a caller asked for)."""
    if not payload:
        return {}
    out = dict(payload)
    packed = out.pop(PACKED_KEY, None)
    if packed is not None:
        out.update(_loads(packed))
    for k in BOOL_FIELDS & out.keys():
        if type(out[k]) is int:
            out[k] = bool(out[k])
    if fields is not None:
        out = {k: out[k] for k in fields if k in out}
    return out


def payload_selector(with_payload: bool | Sequence[str]) -> tuple[bool | list[str], list[str] | None]:
    """What to ask Edge for (also the packed string unless every key asked for is flat) and the keys
    to keep after unpacking (None: all)."""
    if isinstance(with_payload, bool):
        return with_payload, None
    wanted = list(with_payload)
    # a packed key is top-level in a point written before packing, inside PACKED_KEY after
    return (wanted if FLAT_FIELDS.issuperset(wanted) else [*wanted, PACKED_KEY]), wanted
