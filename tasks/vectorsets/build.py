"""Build a vector set: the ``upsert`` stage. Always safe: it never touches what the alias serves.

:func:`run_build` makes the physical collection of the workspace's fingerprint
(``f"{qdrant.collection}-{fingerprint}"``) equal to the workspace's artifacts (deduped rows +
vectors, read through :mod:`embedline.tasks.vectorsets.source`), idempotently and incrementally:

1. diff desired ``id -> payload_hash`` against a scan of the collection (:func:`embedline.tasks.vectorsets.sync.compute_plan`);
2. refuse a plan that deletes more than ``qdrant.max_delete_fraction`` of the collection unless
   ``allow_mass_delete``;
3. upsert adds + updates in batches (``qdrant.batch_points`` points, ``qdrant.batch_mb`` bytes,
   parallel streams where the backend allows, acknowledged, transient errors retried), THEN delete;
4. validate (count, a sample of vectors and payload hashes read back);
5. write the receipt (``data/receipts/upsert.json``, a DVC output: the end state only, byte-stable).

Serving the set (the alias swap, after the quality gate) is :mod:`embedline.tasks.vectorsets.promote`.
A crash anywhere is repaired by re-running: step 1 sees what already landed.

Unchanged inputs: the receipt records the SHA-256 of the deduped shards the build synced from
(``deduped_sha256``). When they have not changed since, the collection exists and holds the
receipt's ``points_total``, the build skips the spill, the scan and the diff (``diff_skipped``: a
re-run over an unchanged workspace costs a hash of the deduped files, not a scan of the store).
A store changed behind the pipeline's back with the same point count is what ``embedline verify``
(always the full diff) reports and ``--repair`` fixes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from embedline.tasks import progress
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.payloads import PAYLOAD_HASH
from embedline.tasks.records import read_json, write_json
from embedline.tasks.vector_shards import file_digest
from embedline.tasks.vectorsets.base import (
    ColumnPacking,
    FieldRecord,
    PageRelease,
    check_compatible,
)
from embedline.tasks.vectorsets.lifecycle import (
    Context,
    MassDeleteError,
    VectorSetValidationError,
    delete_points,
    load_context,
    sparse_encoder,
    validate_collection,
    with_sparse,
    write_points,
)
from embedline.tasks.vectorsets.source import (
    SyncState,
    deduped_shards,
    desired_pairs,
    require_rows,
    sample_vectors,
    shard_points,
    shard_slices,
)
from embedline.tasks.vectorsets.stores import PointRecord
from embedline.tasks.vectorsets.sync import SyncPlan

RECEIPT_KEYS = ("collection", "alias", "fingerprint", "model", "backend")


@dataclass
class Workspace:
    """A build context: the store context plus the sync state (desired vs existing, on disk)."""

    ctx: Context
    state: SyncState

    def close(self) -> None:
        self.state.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def open_workspace(cfg: Config, art: Artifacts, *, recorded: bool = False) -> Workspace:
    """The context and the desired state (spilled to disk), with the store's state scanned in
    (``recorded``: or read from the last sync's record, :meth:`SyncState.scan_store`)."""
    require_rows(art)
    ctx = load_context(cfg, art)
    state = SyncState.of_artifacts(art, fingerprint=ctx.fingerprint, model=ctx.model)
    state.scan_store(ctx.store, ctx.collection, recorded=recorded)
    return Workspace(ctx, state)


def sync_plan(ctx: Context, state: SyncState, *, with_ids: bool = True) -> SyncPlan:
    """The plan of a workspace; ``with_ids=False`` carries counts only (ids stay on disk)."""
    c = state.counts()
    ids = {k: tuple(state.ids(k)) if with_ids else () for k in ("adds", "updates", "deletes")}
    return SyncPlan(
        adds=ids["adds"], updates=ids["updates"], deletes=ids["deletes"],
        unchanged=c["desired"] - c["adds"] - c["updates"], existing=c["existing"], desired=c["desired"],
        collection=ctx.collection, alias=ctx.alias, live_collection=ctx.live,
        new_vector_set=ctx.live != ctx.collection,
        extra={} if with_ids else {"counts": {k: c[k] for k in ("adds", "updates", "deletes")}},
    )


def plan_counts(sp: SyncPlan) -> dict[str, int]:
    counts = sp.extra.get("counts")
    if counts is not None:
        return dict(counts)
    return {"adds": len(sp.adds), "updates": len(sp.updates), "deletes": len(sp.deletes)}


def guard_deletes(ctx: Context, sp: SyncPlan, allow: bool) -> None:
    """Refuse a sync that deletes more than ``qdrant.max_delete_fraction`` of the collection."""
    frac = ctx.cfg.qdrant.max_delete_fraction
    deletes = plan_counts(sp)["deletes"]
    fraction = deletes / sp.existing if sp.existing else 0.0
    if allow or not sp.existing or fraction <= frac:
        return
    raise MassDeleteError(
        f"refusing to delete {deletes} of {sp.existing} points "
        f"({fraction:.0%}) from {ctx.collection!r}: more than qdrant.max_delete_fraction="
        f"{frac:.0%}. Is the source folder empty or unmounted? Re-run with --allow-mass-delete "
        "if this is intended."
    )


def validation_sample(ws: Workspace) -> dict[str, Any]:
    ids = ws.state.sample(ws.ctx.cfg.qdrant.validate_sample)
    return sample_vectors(ws.ctx.art, ws.state, ids)


def validate(ws: Workspace, what: str) -> None:
    ctx = ws.ctx
    problems = validate_collection(
        ctx.store, ctx.collection, expected_count=ws.state.desired,
        sample=validation_sample(ws), distance=ctx.cfg.qdrant.distance, sparse=sparse_encoder(ctx.cfg),
    )
    if problems:
        shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        raise VectorSetValidationError(
            f"{what} {ctx.collection!r} failed validation: {shown}. The alias {ctx.alias!r} was left on "
            f"{ctx.live!r}; re-run the upsert or `embedline verify --repair`."
        )


def _records(ws: Workspace, everything: bool, timings: dict[str, float]) -> Iterator[PointRecord]:
    """The records to upsert, built one deduped shard at a time (payloads only for these); only
    the shards holding points to write are read (``timings["deduped_shards_read"]``)."""
    ctx = ws.ctx
    enc = sparse_encoder(ctx.cfg)
    # the store's own payload layout, built column-wise (not with sparse vectors: BM25 reads the payload)
    packer = ctx.store.pack_columns if enc is None and isinstance(ctx.store, ColumnPacking) else None
    for shard, rows in ws.state.to_write(everything):
        timings["deduped_shards_read"] = timings.get("deduped_shards_read", 0) + 1
        for part in shard_slices(ctx.art, shard, rows):  # a whole shard (first ingest) in slices too
            recs = shard_points(ctx.art, shard, part, fingerprint=ctx.fingerprint, model=ctx.model,
                                dims=ctx.dims, packer=packer)
            if enc is None:
                yield from recs
                continue
            for rec in recs:
                yield with_sparse(rec, enc)


def sync(ws: Workspace, sp: SyncPlan, *, everything: bool = False, timings: dict[str, float] | None = None
         ) -> tuple[int, int]:
    """Upsert adds + updates (every desired point with ``everything``) shard by shard, then
    delete, then let the store build its index; returns (written, deleted). ``timings`` receives
    the seconds spent writing points and building the index."""
    ctx = ws.ctx
    store, q = ctx.store, ctx.cfg.qdrant
    counts = plan_counts(sp)
    todo = ws.state.desired if everything else counts["adds"] + counts["updates"]
    written = 0
    timings = {} if timings is None else timings
    if todo:
        with progress.track("upsert", total=todo, unit="point") as bar:
            records = _records(ws, everything, timings)
            written = write_points(store, ctx.collection, progress.counted(records, bar),
                                   params=q, dims=ctx.dims, settle=store.release_pages if isinstance(store, PageRelease) else None)
    deleted = delete_points(store, ctx.collection, ws.state.ids("deletes")) if counts["deletes"] else 0
    t1 = time.perf_counter()
    if written or deleted:
        store.optimize(ctx.collection)
    timings["seconds_index"] = time.perf_counter() - t1
    return written, deleted


def write_receipt(ctx: Context, points_total: int, deduped_sha256: str | None = None) -> dict[str, Any]:
    """The receipt (a DVC output) records the end state only: a no-op re-run, or `dvc pull`
    followed by a build, rewrites it byte for byte. Per-run counts go to the metrics.
    ``deduped_sha256``: the deduped shards the collection was synced from (module doc)."""
    receipt: dict[str, Any] = {
        "collection": ctx.collection, "alias": ctx.alias, "fingerprint": ctx.fingerprint,
        "model": ctx.model, "backend": ctx.store.backend, "points_total": points_total,
    }
    if deduped_sha256 is not None:
        receipt["deduped_sha256"] = deduped_sha256
    write_json(ctx.art.receipt, receipt)
    return receipt


def deduped_digest(art: Artifacts) -> str:
    """SHA-256 over the deduped shards' (index, SHA-256 of the bytes): what a build synced from."""
    h = hashlib.sha256()
    for index, path in deduped_shards(art):
        h.update(f"{index}:{file_digest(path)}\n".encode())
    return h.hexdigest()


def _unchanged(ctx: Context, digest: str) -> int | None:
    """The point count when the last build synced these very deduped shards into this collection
    and the collection still holds that many points, else None (a full sync is needed)."""
    if not ctx.art.receipt.exists():
        return None
    receipt = read_json(ctx.art.receipt)
    same = all(receipt.get(k) == v for k, v in (("collection", ctx.collection), ("fingerprint", ctx.fingerprint),
                                                 ("model", ctx.model), ("backend", ctx.store.backend),
                                                 ("deduped_sha256", digest)))
    if not same or ctx.store.describe(ctx.collection) is None:
        return None
    total = ctx.store.count(ctx.collection)
    return total if total == receipt.get("points_total") else None


def run_build(
    cfg: Config, art: Artifacts, *, dry_run: bool = False, allow_mass_delete: bool = False,
) -> dict[str, Any]:
    """The ``upsert`` stage: sync the vector set of the workspace's fingerprint (see module doc).
    Never moves the alias; ``served_collection`` in the stats says what it serves."""
    t0 = time.perf_counter()
    require_rows(art)
    digest = deduped_digest(art)
    if not dry_run:
        ctx = load_context(cfg, art)
        total = _unchanged(ctx, digest)
        if total is not None:
            return _skipped(ctx, total, digest, t0)
    with open_workspace(cfg, art, recorded=True) as ws:
        return _build(cfg, ws, t0, dry_run=dry_run, allow_mass_delete=allow_mass_delete, digest=digest)


def _skipped(ctx: Context, total: int, digest: str, t0: float) -> dict[str, Any]:
    write_receipt(ctx, total, digest)
    return {"collection": ctx.collection, "alias": ctx.alias, "fingerprint": ctx.fingerprint, "model": ctx.model,
            "backend": ctx.store.backend, "served_collection": ctx.live, "new_vector_set": ctx.live != ctx.collection,
            "added": 0, "updated": 0, "deleted": 0, "unchanged": total, "dry_run": False, "diff_skipped": True,
            "points_total": total, "seconds": round(time.perf_counter() - t0, 3), "seconds_write": 0.0,
            "seconds_index": 0.0, "points_per_second_write": 0.0, "points_per_second": 0.0}


def _build(cfg: Config, ws: Workspace, t0: float, *, dry_run: bool, allow_mass_delete: bool, digest: str
           ) -> dict[str, Any]:
    ctx = ws.ctx
    spec = ctx.spec(embed=cfg.embed.model_dump(mode="json"))
    existing = ctx.store.describe(ctx.collection)
    if existing is not None:
        check_compatible(existing, spec)
    sp = sync_plan(ctx, ws.state, with_ids=False)
    counts = plan_counts(sp)
    guard_deletes(ctx, sp, allow_mass_delete)
    stats: dict[str, Any] = {
        "collection": ctx.collection,
        "alias": ctx.alias,
        "fingerprint": ctx.fingerprint,
        "model": ctx.model,
        "backend": ctx.store.backend,
        "served_collection": ctx.live,
        "new_vector_set": sp.new_vector_set,
        "added": counts["adds"],
        "updated": counts["updates"],
        "deleted": counts["deletes"],
        "unchanged": sp.unchanged,
        "dry_run": dry_run,
        "diff_skipped": False,
        "store_scanned": not ws.state.existing_recorded,  # False: the last sync's record was read
    }
    if dry_run:
        return {**stats, "points_total": sp.existing, "seconds": round(time.perf_counter() - t0, 3)}
    ctx.store.ensure(spec)
    t1 = time.perf_counter()
    timings: dict[str, float] = {}
    written, _ = sync(ws, sp, timings=timings)
    index = timings.get("seconds_index", 0.0)
    write = time.perf_counter() - t1 - index
    validate(ws, "shadow collection" if sp.new_vector_set else "collection")
    points_total = ctx.store.count(ctx.collection)
    if isinstance(ctx.store, FieldRecord):  # the store now holds exactly the desired state
        ctx.store.record_field(ctx.collection, PAYLOAD_HASH,
                               desired_pairs(ctx.art, fingerprint=ctx.fingerprint, model=ctx.model))
    write_receipt(ctx, points_total, digest)
    seconds = time.perf_counter() - t0
    return {**stats, "points_total": points_total, "seconds": round(seconds, 3),
            # the write path (records built, sent, acknowledged) and the store's index build
            "seconds_write": round(write, 3), "seconds_index": round(index, 3),
            "deduped_shards_read": int(timings.get("deduped_shards_read", 0)),
            "points_per_second_write": round(written / write, 1) if written and write > 0 else 0.0,
            "points_per_second": round(written / seconds, 1) if written and seconds > 0 else 0.0}


# ---- plan -----------------------------------------------------------------------------------------
def _embed_backlog(cfg: Config, art: Artifacts) -> tuple[int | None, int | None]:
    """Unique chunk texts not yet in the embedding cache and their tokens (tokens only for API
    providers, where they cost money). (None, None) when chunks or the embed planner are missing."""
    if not art.chunks.exists():
        return None, None
    try:
        from embedline.tasks.embed.stage import plan_embed
    except ImportError:
        return None, None
    backlog = plan_embed(cfg, art)
    tokens = backlog["tokens_to_embed"] if backlog["billed_by_token"] else None
    return int(backlog["texts_to_embed"]), tokens


def plan(cfg: Config, art: Artifacts) -> SyncPlan:
    """What ``run_build`` would do now (nothing is written), plus the embedding backlog."""
    with open_workspace(cfg, art, recorded=True) as ws:
        sp = sync_plan(ws.ctx, ws.state)
    texts, tokens = _embed_backlog(cfg, art)
    mass = sp.existing > 0 and sp.delete_fraction > cfg.qdrant.max_delete_fraction
    return replace(sp, texts_to_embed=texts, tokens_to_embed=tokens, extra={"mass_delete": mass})
