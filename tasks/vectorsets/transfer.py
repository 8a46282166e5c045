"""Export the live vector set to a file and import such a file into any store, without re-embedding.

File formats (one record per point: ``id``, ``payload`` and, with ``--with-vectors``, ``vector``):

- ``jsonl``: line 1 is ``{"_meta": {...}}``, then one JSON object per point;
- ``parquet``: columns ``id`` (string), ``payload`` (JSON string), ``vector`` (list<float32>); the
  same ``_meta`` object is stored in the schema metadata under ``embedline``.

``_meta`` carries format/version, source collection and alias, dims, distance, whether the set has
the BM25 sparse vector (``sparse``; not written: it is recomputed from each payload on import with
the recipe in the metadata), the vector-set metadata (fingerprint, model, provider) and the point
count, so :func:`import_points` can create the
collection (named ``f"{qdrant.collection}-{fingerprint}"``) and point the alias at it. A set built on
the embedded store moves to a server this way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.vectorsets.lifecycle import (
    VectorSetValidationError,
    delete_points,
    existing_hashes,
    physical_name,
    retain_versions,
    store_for,
    validate_collection,
    write_points,
)
from embedline.tasks.vectorsets.sparse import encoder_for, sparse_for
from embedline.tasks.vectorsets.stores import PointRecord, StoreError, VectorSetSpec
from embedline.tasks.vectorsets.sync import sample_ids

FORMAT = "embedline-points"
VERSION = 1
Format = Literal["jsonl", "parquet"]


def _fmt_for(path: Path, fmt: str | None) -> Format:
    f = fmt or ("parquet" if path.suffix == ".parquet" else "jsonl")
    if f not in ("jsonl", "parquet"):
        raise ValueError(f"unknown export format {f!r}; valid: jsonl, parquet")
    return f  # type: ignore[return-value]


def export_points(
    cfg: Config, art: Artifacts, out: Path, fmt: Format | None = None, with_vectors: bool = False
) -> int:
    """Write every point of the live vector set (alias ``qdrant.collection``) to ``out``."""
    store = store_for(cfg, art)
    alias = cfg.qdrant.collection
    spec = store.describe(alias)
    if spec is None:
        raise StoreError(f"no collection or alias {alias!r} to export")
    kind = _fmt_for(Path(out), fmt)
    meta = {
        "format": FORMAT, "version": VERSION, "collection": spec.name, "alias": alias, "dims": spec.dims,
        "distance": spec.distance, "sparse": spec.sparse, "metadata": dict(spec.metadata),
        "with_vectors": with_vectors,
        "count": store.count(spec.name), "backend": store.backend,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    points = store.scan(spec.name, with_vectors=with_vectors, batch=1024)
    n = _write_jsonl(tmp, meta, points) if kind == "jsonl" else _write_parquet(tmp, meta, points, spec.dims)
    os.replace(tmp, out)
    return n


def _write_jsonl(path: Path, meta: dict[str, Any], points: Iterator[PointRecord]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"_meta": meta}, ensure_ascii=False) + "\n")
        for p in points:
            rec: dict[str, Any] = {"id": p.id, "payload": p.payload}
            if p.vector is not None:
                rec["vector"] = [float(x) for x in p.vector]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write_parquet(path: Path, meta: dict[str, Any], points: Iterator[PointRecord], dims: int) -> int:
    fields = [("id", pa.string()), ("payload", pa.large_string())]
    if meta["with_vectors"]:
        fields.append(("vector", pa.list_(pa.float32(), dims)))
    schema = pa.schema(fields, metadata={"embedline": json.dumps(meta)})
    n = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        buf: list[PointRecord] = []

        def flush() -> None:
            cols: dict[str, Any] = {
                "id": [p.id for p in buf],
                "payload": [json.dumps(p.payload, ensure_ascii=False) for p in buf],
            }
            if meta["with_vectors"]:
                flat = np.stack([np.asarray(p.vector, dtype=np.float32) for p in buf]).reshape(-1)
                cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), dims)
            writer.write_table(pa.table(cols, schema=schema))

        for p in points:
            buf.append(p)
            n += 1
            if len(buf) >= 4096:
                flush()
                buf = []
        if buf:
            flush()
    return n


def read_meta(path: Path) -> dict[str, Any]:
    path = Path(path)
    if _fmt_for(path, None) == "parquet":
        raw = (pq.read_schema(path).metadata or {}).get(b"embedline")
        meta = json.loads(raw) if raw else None
    else:
        with path.open(encoding="utf-8") as fh:
            first = json.loads(fh.readline() or "{}")
        meta = first.get("_meta") if isinstance(first, dict) else None
    if not meta or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an embedline export (no {FORMAT!r} metadata)")
    return dict(meta)


def iter_points(path: Path) -> Iterator[PointRecord]:
    path = Path(path)
    if _fmt_for(path, None) == "parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            cols = batch.to_pydict()
            vecs = cols.get("vector")
            for k, pid in enumerate(cols["id"]):
                vec = None if vecs is None else np.asarray(vecs[k], dtype=np.float32)
                yield PointRecord(id=pid, vector=vec, payload=json.loads(cols["payload"][k]))
        return
    with path.open(encoding="utf-8") as fh:
        fh.readline()
        for lineno, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            vec = rec.get("vector")
            yield PointRecord(
                id=str(rec["id"]),
                vector=None if vec is None else np.asarray(vec, dtype=np.float32),
                payload=rec.get("payload") or {},
            )


def import_points(cfg: Config, art: Artifacts, path: Path) -> int:
    """Load an export into the configured store: create its collection, upsert, validate, point
    the alias ``qdrant.collection`` at it (older versions retained per ``qdrant.keep_versions``)."""
    meta = read_meta(path)
    if not meta.get("with_vectors"):
        raise ValueError(f"{path} was exported without vectors (--with-vectors): nothing to import from")
    store = store_for(cfg, art)
    q = cfg.qdrant
    vmeta = dict(meta.get("metadata") or {})
    fp = vmeta.get("fingerprint")
    name = physical_name(q, str(fp)) if fp else str(meta["collection"])
    vmeta["alias"] = q.collection
    vmeta["imported_from"] = f"{meta.get('backend')}:{meta['collection']}"
    spec = VectorSetSpec(
        name=name, dims=int(meta["dims"]), distance=meta.get("distance", "Cosine"), on_disk=q.on_disk,
        quantization=q.quantization, hnsw_m=q.hnsw_m, metadata=vmeta, sparse=bool(meta.get("sparse", False)),
        payload_indexes=tuple(q.payload_indexes),
    )
    enc = encoder_for(spec) if spec.sparse else None
    created = store.ensure(spec)
    dims = spec.dims
    sample_pool: dict[str, tuple[np.ndarray, str | None]] = {}
    file_ids = {p.id for p in iter_points(path)}
    keep = set(sample_ids(sorted(file_ids), q.validate_sample))

    def checked() -> Iterator[PointRecord]:
        for p in iter_points(path):
            if p.vector is None or p.vector.shape != (dims,):
                raise ValueError(f"{path}: point {p.id} has no {dims}-d vector")
            if p.id in keep:
                sample_pool[p.id] = (p.vector, (p.payload or {}).get("payload_hash"))
            yield p if enc is None else replace(p, sparse=sparse_for(p.payload or {}, enc))

    n = write_points(store, name, checked(), params=q, dims=dims)
    if not created:  # an existing collection becomes equal to the file: drop points it does not hold
        stale = sorted(pid for pid in existing_hashes(store, name) if pid not in file_ids)
        delete_points(store, name, stale)
    store.optimize(name)
    problems = validate_collection(
        store, name, expected_count=len(file_ids),
        sample=sample_pool, distance=spec.distance, sparse=enc,  # type: ignore[arg-type]
    )
    if problems:
        raise VectorSetValidationError(f"import into {name!r} failed validation: {'; '.join(problems[:5])}")
    if store.get_alias(q.collection) != name:
        store.swap_alias(q.collection, name)
        retain_versions(store, q.collection, q.keep_versions)
    return n
