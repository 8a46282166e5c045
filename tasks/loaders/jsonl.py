"""JSON and JSON Lines loaders: one document per record.

The text, id and title fields come from ``preprocess.json_text_field`` / ``json_id_field`` /
``json_title_field`` (BEIR-style ``_id``/``title``/``text`` by default; ``id`` is also tried for the
id). Every other field is kept as metadata. A record's source is ``file.jsonl#<id>`` (its doc id
is the hash of that), so records keep stable identities when the file is re-ordered. A malformed
line is rejected as ``file.jsonl:LINE``; the good lines still load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedline.tasks.config import PreprocessParams
from embedline.tasks.loaders.base import (
    RejectedInput,
    RejectReason,
    make_document,
    read_text,
    reject,
)
from embedline.tasks.records import Document, Rejection


class Malformed:
    """A JSONL line that did not parse."""

    def __init__(self, detail: str):
        self.detail = detail


def _records_to_docs(
    items: Iterator[tuple[str, Any]], rel: str, params: PreprocessParams
) -> Iterator[Document | Rejection]:
    """``items`` yields (location, parsed value); location names the line/index for rejections."""
    seen: set[str] = set()
    for loc, rec in items:
        if isinstance(rec, Malformed):
            yield reject(f"{rel}:{loc}", RejectReason.malformed_json, rec.detail)
            continue
        try:
            doc = record_document(rec, rel, loc, params)
        except RejectedInput as rej:
            yield reject(f"{rel}:{loc}", rej.reason, rej.detail)
            continue
        if doc.source in seen:
            yield reject(
                f"{rel}:{loc}", RejectReason.duplicate_id, f"id already used: {doc.source}"
            )
            continue
        seen.add(doc.source)
        yield doc


def record_document(
    rec: Any, rel: str, loc: str, params: PreprocessParams, *, whole_file: bool = False
) -> Document:
    """One JSON object -> Document (source ``rel#id``, or ``rel`` for a single-object file)."""
    if not isinstance(rec, dict):
        raise RejectedInput(
            RejectReason.malformed_json, f"record is a {type(rec).__name__}, not an object"
        )
    text = rec.get(params.json_text_field)
    title = rec.get(params.json_title_field)
    title = str(title) if isinstance(title, str | int | float) else ""
    if (text is None or (isinstance(text, str) and not text.strip())) and title.strip():
        text = title  # a title-only record is a document (BEIR corpora have them)
    if text is None:
        raise RejectedInput(
            RejectReason.missing_field,
            f"no '{params.json_text_field}' field (preprocess.json_text_field); keys: {sorted(rec)[:10]}",
        )
    if isinstance(text, list) and all(isinstance(t, str) for t in text):
        text = "\n\n".join(text)
    if not isinstance(text, str):
        raise RejectedInput(
            RejectReason.malformed_json,
            f"'{params.json_text_field}' is a {type(text).__name__}, not text",
        )
    rid = rec.get(params.json_id_field, rec.get("id"))
    rid = str(rid) if rid is not None and str(rid).strip() else loc
    used = {params.json_text_field, params.json_id_field, params.json_title_field}
    meta = {k: v for k, v in rec.items() if k not in used}
    meta["record"] = rid
    return make_document(
        source=rel if whole_file else f"{rel}#{rid}",
        text=text,
        fmt="json",
        params=params,
        mode="prose",
        title=title,
        metadata=meta,
    )


class JsonlLoader:
    name = "json"

    def load(
        self, path: Path, rel: str, params: PreprocessParams
    ) -> Iterator[Document | Rejection]:
        text, _ = read_text(path, params)
        if not text.strip():
            raise RejectedInput(RejectReason.empty, "no records")

        def items() -> Iterator[tuple[str, Any]]:
            for n, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    yield str(n), json.loads(line)
                except json.JSONDecodeError as exc:
                    yield str(n), Malformed(f"{exc.msg} (column {exc.colno})")

        yield from _records_to_docs(items(), rel, params)


class JsonLoader:
    """A .json file: one object (one document) or a list of objects (one document each)."""

    name = "json"

    def load(
        self, path: Path, rel: str, params: PreprocessParams
    ) -> Iterator[Document | Rejection]:
        text, _ = read_text(path, params)
        if not text.strip():
            raise RejectedInput(RejectReason.empty, "no JSON")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RejectedInput(
                RejectReason.malformed_json, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        if isinstance(data, dict):
            yield record_document(data, rel, "1", params, whole_file=True)
        elif isinstance(data, list):
            yield from _records_to_docs(((str(i), rec) for i, rec in enumerate(data)), rel, params)
        else:
            raise RejectedInput(
                RejectReason.malformed_json, f"top level is a {type(data).__name__}"
            )
