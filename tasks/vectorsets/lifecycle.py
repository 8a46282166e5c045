"""Vector sets: a physical collection per fingerprint, an alias to the live one, and the mechanics
shared by build, verify, promote and import (write points in batches, validate, retain versions).

Naming: physical = ``f"{qdrant.collection}-{fingerprint}"``; the alias ``qdrant.collection`` points at
the live one. A new fingerprint (model, dims, prompt, preprocessing or chunking changed) builds a
*shadow* collection, which is validated (point count, a sample of vectors read back equal to
the vector shards within 1e-6, payload hashes) before the alias is swapped; the previous
``qdrant.keep_versions`` collections of the alias are kept, older ones dropped.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, QdrantParams
from embedline.tasks.memory import quiet_gc
from embedline.tasks.vectors import unit
from embedline.tasks.vectorsets.base import PreparedWrites
from embedline.tasks.vectorsets.stores import PointRecord, VectorSetSpec, VectorStore, open_store
from embedline.tasks.vectorsets.sync import PAYLOAD_HASH, SPARSE_ENTRY_BYTES, batched

if TYPE_CHECKING:
    from embedline.tasks.vectorsets.sparse import Bm25Encoder

# Tests set this to pause after the first upsert batch (then SIGKILL the process): crash safety.
PAUSE_ENV = "EMBEDLINE_TEST_UPSERT_PAUSE_S"
VECTOR_ATOL = 1e-6
DELETE_BATCH = 1024
SETTLE_POINTS = 8192  # write_points: points between two settle() calls

class MassDeleteError(RuntimeError):
    """A sync would delete more of the collection than ``qdrant.max_delete_fraction`` allows."""


class VectorSetValidationError(RuntimeError):
    """A collection does not hold what it should; the alias was left where it was."""


@dataclass(frozen=True)
class Context:
    cfg: Config
    art: Artifacts
    store: VectorStore
    manifest: dict[str, Any]
    fingerprint: str
    model: str
    dims: int
    alias: str
    collection: str  # physical name for this fingerprint
    live: str | None  # where the alias points now

    def spec(self, **metadata: Any) -> VectorSetSpec:
        q = self.cfg.qdrant
        if q.sparse:
            from embedline.tasks.vectorsets.sparse import RECIPE_KEY, recipe_for

            metadata = {RECIPE_KEY: recipe_for(self.cfg), **metadata}
        return VectorSetSpec(
            name=self.collection,
            dims=self.dims,
            distance=q.distance,
            on_disk=q.on_disk,
            quantization=q.quantization,
            hnsw_m=q.hnsw_m,
            sparse=q.sparse,
            payload_indexes=tuple(q.payload_indexes),
            metadata={
                "fingerprint": self.fingerprint,
                "model": self.model,
                "provider": self.manifest.get("provider"),
                "alias": self.alias,
                "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                **metadata,
            },
        )


def physical_name(params: QdrantParams, fingerprint: str) -> str:
    return f"{params.collection}-{fingerprint}"


def store_for(cfg: Config, art: Artifacts) -> VectorStore:
    return open_store(cfg.qdrant, art.root)


def load_context(cfg: Config, art: Artifacts) -> Context:
    if not art.manifest.exists():
        raise FileNotFoundError(f"{art.manifest} is missing: run the embed stage first")
    # imported here: records imports pyarrow, and a search (which imports this module) needs none
    from embedline.tasks.records import read_json

    manifest = read_json(art.manifest)
    for key in ("fingerprint", "dims", "model"):
        if manifest.get(key) in (None, ""):
            raise ValueError(f"{art.manifest} has no {key!r}")
    _check_sparse_flag(cfg, art, manifest)
    store = store_for(cfg, art)
    fp = str(manifest["fingerprint"])
    return Context(
        cfg=cfg,
        art=art,
        store=store,
        manifest=manifest,
        fingerprint=fp,
        model=str(manifest["model"]),
        dims=int(manifest["dims"]),
        alias=cfg.qdrant.collection,
        collection=physical_name(cfg.qdrant, fp),
        live=store.get_alias(cfg.qdrant.collection),
    )


def _check_sparse_flag(cfg: Config, art: Artifacts, manifest: Mapping[str, Any]) -> None:
    """``qdrant.sparse`` is part of the fingerprint the embed stage writes into the manifest: a
    manifest built with the other setting would name the wrong collection. Say so clearly."""
    revision = manifest.get("revision")
    if "revision" not in manifest or cfg.fingerprint(revision) == manifest["fingerprint"]:
        return
    other = not cfg.qdrant.sparse
    flipped = cfg.model_copy(update={"qdrant": cfg.qdrant.model_copy(update={"sparse": other})})
    if flipped.fingerprint(revision) == manifest["fingerprint"]:
        raise ValueError(
            f"{art.manifest} was written with qdrant.sparse={other}, but qdrant.sparse="
            f"{cfg.qdrant.sparse} now: re-run the embed stage first (`embedline stage embed` or `dvc repro`; "
            "every vector comes from the cache) so the vector set gets its own fingerprint"
        )


def existing_hashes(store: VectorStore, collection: str) -> dict[str, str | None]:
    if store.describe(collection) is None:
        return {}
    return {
        p.id: (p.payload or {}).get(PAYLOAD_HASH)
        for p in store.scan(collection, with_payload=[PAYLOAD_HASH], batch=2048)
    }


def _pause_for_tests() -> None:
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        print(f"upsert: first batch written; pausing {pause}s ({PAUSE_ENV})", file=sys.stderr, flush=True)
        time.sleep(float(pause))


def write_points(
    store: VectorStore, collection: str, points: Iterable[PointRecord], *, params: QdrantParams, dims: int,
    settle: Callable[[], None] | None = None, settle_every: int | None = None,
) -> int:
    """Upsert ``points`` in batches (points and bytes), ``store.max_parallel`` streams at once.
    ``settle``: called after every ``settle_every`` (default ``SETTLE_POINTS``) points once no
    request is in flight (the upsert gives the store's written pages back there:
    :func:`embedline.tasks.memory.release_mapped`).

    A store with ``prepare`` / ``write_prepared`` (Edge) has its requests built here, in the thread
    that reads the records, and only written by the streams: the Python work stays on one thread
    (no two threads take the GIL from each other at every payload value) while the engine writes
    the previous request without it. Garbage collection runs rarely meanwhile (:func:`quiet_gc`)."""
    every = settle_every or SETTLE_POINTS
    max_bytes = int(params.batch_mb * 1024 * 1024)
    batches = batched(points, max_points=params.batch_points, max_bytes=max_bytes, dims=dims)
    send = _sender(store, collection)
    written = since = 0
    first = True
    streams = max(1, min(store.max_parallel, params.parallel))
    with quiet_gc(), ThreadPoolExecutor(max_workers=streams, thread_name_prefix="upsert") as pool:
        pending: set[Future[int]] = set()
        for b in batches:
            job = send(b)
            if first or streams == 1:  # the first batch alone: a crash test pauses once it is acknowledged
                written += job()
                if first:
                    first = False
                    _pause_for_tests()
            else:
                if len(pending) >= 2 * streams:  # bounded in-flight requests: bounded memory
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    written += sum(f.result() for f in done)
                pending.add(pool.submit(job))
            since += len(b)
            if settle is not None and since >= every:
                written += sum(f.result() for f in pending)
                pending, since = set(), 0
                settle()
        written += sum(f.result() for f in pending)
    return written


def _sender(store: VectorStore, collection: str) -> Callable[[list[PointRecord]], Callable[[], int]]:
    """``send(batch)`` -> a job that writes the batch and returns its size. With ``prepare`` the
    request is built by ``send`` itself (the caller's thread), else by the job (write_points doc)."""
    if not isinstance(store, PreparedWrites):
        return lambda batch: lambda: _upsert_counted(store, collection, batch)
    prepare, write = store.prepare, store.write_prepared

    def send(batch: list[PointRecord]) -> Callable[[], int]:
        request, n = prepare(batch), len(batch)

        def job() -> int:
            write(collection, request)
            return n

        return job

    return send


def _upsert_counted(store: VectorStore, collection: str, batch: list[PointRecord]) -> int:
    store.upsert(collection, batch)
    return len(batch)


def delete_points(store: VectorStore, collection: str, ids: Iterable[str]) -> int:
    """Delete ``ids`` (any iterable, streamed) in batches of ``DELETE_BATCH``; returns how many."""
    n = 0
    part: list[str] = []
    for pid in ids:
        part.append(pid)
        if len(part) >= DELETE_BATCH:
            store.delete(collection, part)
            n, part = n + len(part), []
    if part:
        store.delete(collection, part)
        n += len(part)
    return n


def with_sparse(rec: PointRecord, sparse: Bm25Encoder | None) -> PointRecord:
    """``rec`` carrying its BM25 sparse vector (a function of its payload) when ``sparse`` is set."""
    if sparse is None:
        return rec
    from embedline.tasks.vectorsets.sparse import sparse_for

    sv = sparse_for(rec.payload or {}, sparse)
    hint = rec.size_hint + len(sv) * SPARSE_ENTRY_BYTES if rec.size_hint else 0
    return dataclasses.replace(rec, sparse=sv, size_hint=hint)


def sparse_encoder(cfg: Config) -> Bm25Encoder | None:
    """The BM25 encoder when ``qdrant.sparse`` is on, else None."""
    if not cfg.qdrant.sparse:
        return None
    from embedline.tasks.vectorsets.sparse import encoder_for_config

    return encoder_for_config(cfg)


def expected_vector(v: np.ndarray, distance: str) -> np.ndarray:
    """What the store returns for an inserted vector (Qdrant normalises for Cosine)."""
    return unit(v) if distance == "Cosine" else np.asarray(v, dtype=np.float32)


def validate_collection(
    store: VectorStore,
    collection: str,
    *,
    expected_count: int,
    sample: Mapping[str, tuple[np.ndarray, str]],
    distance: str,
    sparse: Bm25Encoder | None = None,
) -> list[str]:
    """Problems found (empty = valid): count, sampled vectors (within 1e-6) and payload hashes;
    with a ``sparse`` encoder, also each sampled point's sparse vector against its payload."""
    problems = []
    count = store.count(collection)
    if count != expected_count:
        problems.append(f"count {count} != expected {expected_count}")
    if sample:
        got = {p.id: p for p in store.retrieve(collection, list(sample), with_vectors=True)}
        for pid, (vec, phash) in sample.items():
            rec = got.get(pid)
            if rec is None or rec.vector is None:
                problems.append(f"point {pid} missing")
                continue
            want = expected_vector(vec, distance)
            if rec.vector.shape != want.shape or not np.allclose(rec.vector, want, atol=VECTOR_ATOL, rtol=0):
                problems.append(f"point {pid}: vector read back differs from the vector shards")
            if (rec.payload or {}).get(PAYLOAD_HASH) != phash:
                problems.append(f"point {pid}: payload hash differs")
            if sparse is not None and not _sparse_matches(rec, sparse):
                problems.append(f"point {pid}: sparse vector missing or not the BM25 vector of its payload")
    return problems


def _sparse_matches(rec: PointRecord, enc: Bm25Encoder) -> bool:
    from embedline.tasks.vectorsets.sparse import sparse_for

    if rec.sparse is None:
        return False
    want = sparse_for(rec.payload or {}, enc)
    got = rec.sparse.as_dict()
    return set(got) == set(want.indices) and all(
        abs(got[i] - v) <= 1e-4 * max(1.0, abs(v)) for i, v in zip(want.indices, want.values, strict=True)
    )


def retain_versions(store: VectorStore, alias: str, keep: int) -> list[str]:
    """Drop the alias' old physical collections beyond the ``keep`` most recent non-live ones."""
    aliases = store.list_aliases()
    live_targets = set(aliases.values())
    mine = []
    for name in store.list_collections():
        if not name.startswith(f"{alias}-") or name in live_targets:
            continue
        spec = store.describe(name)
        if spec is None or spec.metadata.get("alias", alias) != alias:
            continue
        mine.append((str(spec.metadata.get("created_at", "")), name))
    mine.sort(reverse=True)
    dropped = []
    for _, name in mine[keep:]:
        store.drop_collection(name)
        dropped.append(name)
    return dropped
