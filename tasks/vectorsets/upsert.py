"""The upsert stage and the store commands built on it: plan, verify (--repair), search.

``run_upsert`` makes the physical collection of the current fingerprint equal to deduped.parquet +
vectors.npy, idempotently and incrementally:

1. diff desired ``id -> payload_hash`` against a scan of the collection (:func:`embedline.tasks.vectorsets.sync.compute_plan`);
2. refuse a plan that deletes more than ``qdrant.max_delete_fraction`` of the collection (or a new
   vector set that shrinks the live one by as much) unless ``allow_mass_delete``;
3. upsert adds + updates in batches (``qdrant.batch_points`` points, ``qdrant.batch_mb`` bytes,
   parallel streams where the backend allows, acknowledged, transient errors retried), THEN delete;
4. validate (count, a sample of vectors and payload hashes read back);
5. for a new vector set: run the gate, swap the alias, keep ``qdrant.keep_versions`` old versions;
6. write the receipt (art.receipt).

A crash anywhere is repaired by re-running: step 1 sees what already landed. Export/import live in
:mod:`embedline.tasks.vectorsets.transfer` and are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.records import write_json
from embedline.tasks.vectorsets.base import (
    SparseVectorMissingError,
    VectorSetMismatchError,
    check_compatible,
)
from embedline.tasks.vectorsets.fusion import DocHit
from embedline.tasks.vectorsets.lifecycle import (
    Context,
    Gate,
    MassDeleteError,
    VectorSetValidationError,
    delete_points,
    existing_hashes,
    load_context,
    open_vectors,
    records_for,
    sparse_encoder,
    swap_live,
    validate_collection,
    write_points,
)
from embedline.tasks.vectorsets.stores import (
    Hit,
    PayloadFilter,
    StoreError,
    VectorSetSpec,
    VectorStore,
)
from embedline.tasks.vectorsets.sync import (
    SyncPlan,
    compute_plan,
    desired_hashes,
    iter_desired,
    sample_ids,
)
from embedline.tasks.vectorsets.transfer import export_points, import_points

__all__ = [
    "SEARCH_MODES",
    "Gate",
    "MassDeleteError",
    "SparseVectorMissingError",
    "SyncPlan",
    "VectorSetMismatchError",
    "VectorSetValidationError",
    "VerifyReport",
    "export_points",
    "import_points",
    "plan",
    "run_upsert",
    "search",
    "verify",
]


def _require_deduped(art: Artifacts) -> None:
    if not art.deduped.exists():
        raise FileNotFoundError(f"{art.deduped} is missing: run the dedupe stage first")


def _desired(ctx: Context) -> dict[str, str]:
    return desired_hashes(ctx.art.deduped, fingerprint=ctx.fingerprint, model=ctx.model)


def _sync_plan(ctx: Context, desired: dict[str, str]) -> SyncPlan:
    sp = compute_plan(desired, existing_hashes(ctx.store, ctx.collection))
    return replace(
        sp, collection=ctx.collection, alias=ctx.alias, live_collection=ctx.live,
        new_vector_set=ctx.live != ctx.collection,
    )


def _guard(ctx: Context, sp: SyncPlan, allow: bool) -> None:
    frac = ctx.cfg.qdrant.max_delete_fraction
    if allow:
        return
    if sp.existing and sp.delete_fraction > frac:
        raise MassDeleteError(
            f"refusing to delete {len(sp.deletes)} of {sp.existing} points "
            f"({sp.delete_fraction:.0%}) from {ctx.collection!r}: more than qdrant.max_delete_fraction="
            f"{frac:.0%}. Is the source folder empty or unmounted? Re-run with --allow-mass-delete "
            "if this is intended."
        )
    if sp.new_vector_set and ctx.live is not None:
        live_count = ctx.store.count(ctx.live)
        if live_count and (live_count - sp.desired) / live_count > frac:
            raise MassDeleteError(
                f"the new vector set {ctx.collection!r} would hold {sp.desired} points where the live "
                f"{ctx.live!r} holds {live_count} (more than qdrant.max_delete_fraction={frac:.0%} fewer); "
                "refusing to swap the alias. Re-run with --allow-mass-delete if this is intended."
            )


def _validation_sample(ctx: Context, desired: dict[str, str], vectors: np.ndarray) -> dict[str, Any]:
    ids = set(sample_ids(list(desired), ctx.cfg.qdrant.validate_sample))
    if not ids:
        return {}
    t = pq.read_table(ctx.art.deduped, columns=["point_id", "row"])
    rows = dict(zip(t["point_id"].to_pylist(), t["row"].to_pylist(), strict=True))
    return {pid: (np.asarray(vectors[rows[pid]]), desired[pid]) for pid in ids}


def _validate(ctx: Context, desired: dict[str, str], vectors: np.ndarray, what: str) -> None:
    problems = validate_collection(
        ctx.store, ctx.collection, expected_count=len(desired),
        sample=_validation_sample(ctx, desired, vectors), distance=ctx.cfg.qdrant.distance,
        sparse=sparse_encoder(ctx.cfg),
    )
    if problems:
        shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        raise VectorSetValidationError(
            f"{what} {ctx.collection!r} failed validation: {shown}. The alias {ctx.alias!r} was left on "
            f"{ctx.live!r}; re-run the upsert or `embedline verify --repair`."
        )


def _sync(ctx: Context, desired: dict[str, str], sp: SyncPlan, vectors: np.ndarray) -> tuple[int, int]:
    store, q = ctx.store, ctx.cfg.qdrant
    wanted = set(sp.adds) | set(sp.updates)
    written = 0
    if wanted:
        batches = iter_desired(ctx.art.deduped, fingerprint=ctx.fingerprint, model=ctx.model)
        records = records_for(batches, vectors, wanted, sparse=sparse_encoder(ctx.cfg))
        written = write_points(store, ctx.collection, records, params=q, dims=ctx.dims)
    deleted = delete_points(store, ctx.collection, sp.deletes)  # only after every upsert landed
    if written or deleted:
        store.optimize(ctx.collection)
    return written, deleted


def run_upsert(
    cfg: Config,
    art: Artifacts,
    *,
    dry_run: bool = False,
    allow_mass_delete: bool = False,
    gate: Gate | None = None,
) -> dict[str, Any]:
    """Sync the vector set of the current fingerprint; swap the alias to it when it is new.

    ``gate(shadow, live)`` runs after validation and before a swap; raising refuses the swap. By
    default it is the retrieval quality gate (:func:`embedline.tasks.evaluate.make_gate`) when ``eval.gate``.
    """
    t0 = time.perf_counter()
    _require_deduped(art)
    if gate is None and cfg.eval.gate:
        from embedline.tasks.evaluate import make_gate

        gate = make_gate(cfg, art)
    ctx = load_context(cfg, art)
    spec = ctx.spec(embed=cfg.embed.model_dump(mode="json"))
    existing = ctx.store.describe(ctx.collection)
    if existing is not None:
        check_compatible(existing, spec)
    vectors = open_vectors(art, ctx.dims)
    desired = _desired(ctx)
    sp = _sync_plan(ctx, desired)
    _guard(ctx, sp, allow_mass_delete)
    stats: dict[str, Any] = {
        "collection": ctx.collection,
        "alias": ctx.alias,
        "fingerprint": ctx.fingerprint,
        "model": ctx.model,
        "backend": ctx.store.backend,
        "previous_collection": ctx.live,
        "new_vector_set": sp.new_vector_set,
        "added": len(sp.adds),
        "updated": len(sp.updates),
        "deleted": len(sp.deletes),
        "unchanged": sp.unchanged,
        "dry_run": dry_run,
    }
    if dry_run:
        return {**stats, "points_total": sp.existing, "swapped": False, "seconds": round(time.perf_counter() - t0, 3)}
    ctx.store.ensure(spec)
    _sync(ctx, desired, sp, vectors)
    _validate(ctx, desired, vectors, "shadow collection" if sp.new_vector_set else "collection")
    dropped: list[str] = []
    swapped = False
    if sp.new_vector_set:
        dropped = swap_live(ctx.store, ctx.alias, ctx.collection, ctx.live, keep=cfg.qdrant.keep_versions, gate=gate)
        swapped = True
    points_total = ctx.store.count(ctx.collection)
    # The receipt (a DVC output) records the end state only: a no-op re-run, or `dvc pull` followed
    # by `embedline stage upsert`, rewrites it byte for byte. Per-run counts go to the metrics.
    receipt = {k: stats[k] for k in ("collection", "alias", "fingerprint", "model", "backend")}
    receipt["points_total"] = points_total
    write_json(art.receipt, receipt)
    return {**stats, "points_total": points_total, "swapped": swapped, "dropped": len(dropped),
            "seconds": round(time.perf_counter() - t0, 3)}


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
    """What ``run_upsert`` would do now (nothing is written), plus the embedding backlog."""
    _require_deduped(art)
    ctx = load_context(cfg, art)
    sp = _sync_plan(ctx, _desired(ctx))
    texts, tokens = _embed_backlog(cfg, art)
    mass = sp.existing > 0 and sp.delete_fraction > cfg.qdrant.max_delete_fraction
    return replace(sp, texts_to_embed=texts, tokens_to_embed=tokens, extra={"mass_delete": mass})


# ---- verify ---------------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    collection: str
    alias: str
    alias_target: str | None
    exists: bool
    expected: int
    actual: int
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    dims_ok: bool = True
    problems: list[str] = field(default_factory=list)  # validation of counts + sampled vectors
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exists and self.dims_ok and not (self.missing or self.orphans or self.stale or self.problems)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("missing", "orphans", "stale"):
            d[k] = len(d[k])
        d["ok"] = self.ok
        return d


def verify(cfg: Config, art: Artifacts, repair: bool = False, *, allow_mass_delete: bool = False) -> VerifyReport:
    """Diff the current fingerprint's collection against deduped.parquet + vectors.npy; with
    ``repair``, upsert missing/stale points and delete orphans (mass-delete guarded)."""
    _require_deduped(art)
    ctx = load_context(cfg, art)
    spec = ctx.store.describe(ctx.collection)
    vectors = open_vectors(art, ctx.dims)
    desired = _desired(ctx)
    report = VerifyReport(collection=ctx.collection, alias=ctx.alias, alias_target=ctx.live,
                          exists=spec is not None, expected=len(desired), actual=0)
    if spec is not None:
        report.dims_ok = spec.dims == ctx.dims
        report.actual = ctx.store.count(ctx.collection)
    if not report.dims_ok:
        report.problems.append(f"collection dims {spec.dims if spec else '?'} != manifest dims {ctx.dims}")
        if repair:
            raise VectorSetMismatchError(
                f"{ctx.collection!r} holds {spec.dims if spec else '?'}-d vectors but the manifest says "
                f"{ctx.dims}: it cannot be repaired in place; drop it and re-run the upsert"
            )
        return report
    sp = _sync_plan(ctx, desired)
    report.missing, report.stale, report.orphans = list(sp.adds), list(sp.updates), list(sp.deletes)
    if spec is not None and not (sp.adds or sp.updates):
        report.problems = validate_collection(
            ctx.store, ctx.collection, expected_count=len(desired) + len(sp.deletes),
            sample=_validation_sample(ctx, desired, vectors), distance=cfg.qdrant.distance,
            sparse=sparse_encoder(cfg),
        )
    if repair and not report.ok:
        _guard(ctx, replace(sp, new_vector_set=False), allow_mass_delete)
        ctx.store.ensure(ctx.spec(embed=cfg.embed.model_dump(mode="json")))
        if report.problems and not (sp.adds or sp.updates):  # vectors/hashes wrong: rewrite all
            sp = replace(sp, updates=tuple(desired))
        written, deleted = _sync(ctx, desired, sp, vectors)
        _validate(ctx, desired, vectors, "repaired collection")
        report.repaired = {"upserted": written, "deleted": deleted}
        report.actual = ctx.store.count(ctx.collection)
    return report


# ---- search ---------------------------------------------------------------------------------------
SearchMode = Literal["dense", "hybrid"]
# (store, spec of the live collection, alias, query text, query vector (lazy), k, filter) -> hits
SearchFn = Callable[[VectorStore, VectorSetSpec, str, str, Callable[[], np.ndarray], int, "PayloadFilter | None"],
                    list[Hit]]


def _dense_search(store: VectorStore, spec: VectorSetSpec, alias: str, query: str,
                  dense: Callable[[], np.ndarray], k: int, filter: PayloadFilter | None) -> list[Hit]:
    return store.search(alias, dense(), k=k, filter=filter)


def _hybrid_lists(store: VectorStore, spec: VectorSetSpec, alias: str, query: str,
                  dense: Callable[[], np.ndarray], depth: int,
                  filter: PayloadFilter | None) -> tuple[list[Hit], list[Hit]]:
    """The dense and the BM25 sparse chunk lists that hybrid search fuses."""
    from embedline.tasks.vectorsets.sparse import encoder_for

    sparse = encoder_for(spec).query(query)  # a dense-only set fails here, before the model loads
    return store.search(alias, dense(), k=depth, filter=filter), store.search_sparse(alias, sparse, k=depth, filter=filter)


def _hybrid_search(store: VectorStore, spec: VectorSetSpec, alias: str, query: str,
                   dense: Callable[[], np.ndarray], k: int, filter: PayloadFilter | None) -> list[Hit]:
    """Chunks by weighted RRF of their dense and sparse ranks (:func:`fusion.fuse_chunks`)."""
    from embedline.tasks.vectorsets.fusion import CANDIDATES_FACTOR, fuse_chunks

    lists = _hybrid_lists(store, spec, alias, query, dense, k * CANDIDATES_FACTOR, filter)
    return fuse_chunks(*lists, k)


SEARCH_MODES: dict[str, SearchFn] = {"dense": _dense_search, "hybrid": _hybrid_search}


@dataclass(frozen=True)
class DocumentResults:
    """Grouped search results: the live physical collection, its fingerprint, best chunk per document."""

    collection: str
    fingerprint: str
    documents: list[DocHit]


def search_documents(
    cfg: Config, art: Artifacts, query: str, k: int = 10, filter: PayloadFilter | None = None,
    *, mode: SearchMode = "dense",
) -> DocumentResults:
    """Like :func:`search`, grouped by document (best chunk per document, client-side: Qdrant Edge
    has no grouping API); ``hybrid`` fuses the dense and sparse *document* ranks by weighted RRF."""
    from embedline.tasks.vectorsets.fusion import CANDIDATES_FACTOR, fuse, group_by_document

    depth = k * CANDIDATES_FACTOR
    store, spec, alias, dense = _search_setup(cfg, art, query, mode)
    if mode == "hybrid":
        docs = fuse(*_hybrid_lists(store, spec, alias, query, dense, depth, filter), k)
    else:
        docs = group_by_document(_dense_search(store, spec, alias, query, dense, depth, filter), k)
    return DocumentResults(spec.name, str(spec.metadata.get("fingerprint", "")), docs)


def search(
    cfg: Config,
    art: Artifacts,
    query: str,
    k: int = 10,
    filter: PayloadFilter | None = None,
    *,
    mode: SearchMode = "dense",
) -> list[Hit]:
    """Embed ``query`` (query prompt applied) and search the live alias ``qdrant.collection``:
    ``dense`` (vector search) or ``hybrid`` (dense + BM25 sparse fused by RRF in Qdrant; needs a
    vector set built with ``qdrant.sparse=true``, else :class:`SparseVectorMissingError`)."""
    run = SEARCH_MODES.get(mode)
    if run is None:
        raise ValueError(f"unknown search mode {mode!r}; valid: {', '.join(SEARCH_MODES)}")
    store, spec, alias, dense = _search_setup(cfg, art, query, mode)
    return run(store, spec, alias, query, dense, k, filter)


def _search_setup(
    cfg: Config, art: Artifacts, query: str, mode: str
) -> tuple[VectorStore, VectorSetSpec, str, Callable[[], np.ndarray]]:
    """The store, the live collection's spec, the alias and a lazy query embedder."""
    from embedline.tasks.vectorsets.lifecycle import store_for

    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; valid: {', '.join(SEARCH_MODES)}")
    store = store_for(cfg, art)
    alias = cfg.qdrant.collection
    spec = store.describe(alias)
    if spec is None:
        raise StoreError(f"no live collection behind {alias!r}: run `embedline ingest` first")
    live = spec

    def dense() -> np.ndarray:
        from embedline.tasks.embed import embed_query

        vec = np.asarray(embed_query(cfg.embed, query), dtype=np.float32).reshape(-1)
        if vec.shape[0] != live.dims:
            raise VectorSetMismatchError(
                f"the query embedder gives {vec.shape[0]}-d vectors but {live.name!r} holds {live.dims}-d "
                f"(model {live.metadata.get('model')!r}): re-run the ingest for the configured model"
            )
        return vec

    return store, spec, alias, dense
