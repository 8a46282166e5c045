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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embedline.tasks import progress
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.records import write_json
from embedline.tasks.vectorsets.base import check_compatible
from embedline.tasks.vectorsets.lifecycle import (
    Context,
    MassDeleteError,
    VectorSetValidationError,
    delete_points,
    existing_hashes,
    load_context,
    records_for,
    sparse_encoder,
    validate_collection,
    write_points,
)
from embedline.tasks.vectorsets.source import (
    desired_points,
    desired_state,
    open_vectors,
    require_rows,
    vector_rows,
)
from embedline.tasks.vectorsets.sync import SyncPlan, compute_plan, sample_ids

RECEIPT_KEYS = ("collection", "alias", "fingerprint", "model", "backend")


@dataclass(frozen=True)
class Workspace:
    """A build context: the store context plus the desired state read from the artifacts."""

    ctx: Context
    desired: dict[str, str]
    vectors: np.ndarray


def open_workspace(cfg: Config, art: Artifacts) -> Workspace:
    require_rows(art)
    ctx = load_context(cfg, art)
    desired = desired_state(art, fingerprint=ctx.fingerprint, model=ctx.model)
    return Workspace(ctx, desired, open_vectors(art, ctx.dims))


def sync_plan(ctx: Context, desired: dict[str, str]) -> SyncPlan:
    sp = compute_plan(desired, existing_hashes(ctx.store, ctx.collection))
    return replace(
        sp, collection=ctx.collection, alias=ctx.alias, live_collection=ctx.live,
        new_vector_set=ctx.live != ctx.collection,
    )


def guard_deletes(ctx: Context, sp: SyncPlan, allow: bool) -> None:
    """Refuse a sync that deletes more than ``qdrant.max_delete_fraction`` of the collection."""
    frac = ctx.cfg.qdrant.max_delete_fraction
    if allow or not sp.existing or sp.delete_fraction <= frac:
        return
    raise MassDeleteError(
        f"refusing to delete {len(sp.deletes)} of {sp.existing} points "
        f"({sp.delete_fraction:.0%}) from {ctx.collection!r}: more than qdrant.max_delete_fraction="
        f"{frac:.0%}. Is the source folder empty or unmounted? Re-run with --allow-mass-delete "
        "if this is intended."
    )


def validation_sample(ws: Workspace) -> dict[str, Any]:
    ids = sample_ids(list(ws.desired), ws.ctx.cfg.qdrant.validate_sample)
    rows = vector_rows(ws.ctx.art, ids)
    return {pid: (np.asarray(ws.vectors[rows[pid]]), ws.desired[pid]) for pid in ids}


def validate(ws: Workspace, what: str) -> None:
    ctx = ws.ctx
    problems = validate_collection(
        ctx.store, ctx.collection, expected_count=len(ws.desired),
        sample=validation_sample(ws), distance=ctx.cfg.qdrant.distance, sparse=sparse_encoder(ctx.cfg),
    )
    if problems:
        shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        raise VectorSetValidationError(
            f"{what} {ctx.collection!r} failed validation: {shown}. The alias {ctx.alias!r} was left on "
            f"{ctx.live!r}; re-run the upsert or `embedline verify --repair`."
        )


def sync(ws: Workspace, sp: SyncPlan) -> tuple[int, int]:
    """Upsert adds + updates, then delete; returns (written, deleted)."""
    ctx = ws.ctx
    store, q = ctx.store, ctx.cfg.qdrant
    wanted = set(sp.adds) | set(sp.updates)
    written = 0
    if wanted:
        batches = desired_points(ctx.art, fingerprint=ctx.fingerprint, model=ctx.model)
        records = records_for(batches, ws.vectors, wanted, sparse=sparse_encoder(ctx.cfg))
        with progress.track("upsert", total=len(wanted), unit="point") as bar:
            written = write_points(store, ctx.collection, progress.counted(records, bar), params=q, dims=ctx.dims)
    deleted = delete_points(store, ctx.collection, sp.deletes)  # only after every upsert landed
    if written or deleted:
        store.optimize(ctx.collection)
    return written, deleted


def write_receipt(ctx: Context, points_total: int) -> dict[str, Any]:
    """The receipt (a DVC output) records the end state only: a no-op re-run, or `dvc pull`
    followed by a build, rewrites it byte for byte. Per-run counts go to the metrics."""
    receipt: dict[str, Any] = {
        "collection": ctx.collection, "alias": ctx.alias, "fingerprint": ctx.fingerprint,
        "model": ctx.model, "backend": ctx.store.backend, "points_total": points_total,
    }
    write_json(ctx.art.receipt, receipt)
    return receipt


def run_build(
    cfg: Config, art: Artifacts, *, dry_run: bool = False, allow_mass_delete: bool = False,
) -> dict[str, Any]:
    """The ``upsert`` stage: sync the vector set of the workspace's fingerprint (see module doc).
    Never moves the alias; ``served_collection`` in the stats says what it serves."""
    t0 = time.perf_counter()
    ws = open_workspace(cfg, art)
    ctx = ws.ctx
    spec = ctx.spec(embed=cfg.embed.model_dump(mode="json"))
    existing = ctx.store.describe(ctx.collection)
    if existing is not None:
        check_compatible(existing, spec)
    sp = sync_plan(ctx, ws.desired)
    guard_deletes(ctx, sp, allow_mass_delete)
    stats: dict[str, Any] = {
        "collection": ctx.collection,
        "alias": ctx.alias,
        "fingerprint": ctx.fingerprint,
        "model": ctx.model,
        "backend": ctx.store.backend,
        "served_collection": ctx.live,
        "new_vector_set": sp.new_vector_set,
        "added": len(sp.adds),
        "updated": len(sp.updates),
        "deleted": len(sp.deletes),
        "unchanged": sp.unchanged,
        "dry_run": dry_run,
    }
    if dry_run:
        return {**stats, "points_total": sp.existing, "seconds": round(time.perf_counter() - t0, 3)}
    ctx.store.ensure(spec)
    sync(ws, sp)
    validate(ws, "shadow collection" if sp.new_vector_set else "collection")
    points_total = ctx.store.count(ctx.collection)
    write_receipt(ctx, points_total)
    return {**stats, "points_total": points_total, "seconds": round(time.perf_counter() - t0, 3)}


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
    require_rows(art)
    ctx = load_context(cfg, art)
    sp = sync_plan(ctx, desired_state(art, fingerprint=ctx.fingerprint, model=ctx.model))
    texts, tokens = _embed_backlog(cfg, art)
    mass = sp.existing > 0 and sp.delete_fraction > cfg.qdrant.max_delete_fraction
    return replace(sp, texts_to_embed=texts, tokens_to_embed=tokens, extra={"mass_delete": mass})
