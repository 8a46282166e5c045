"""Verify: does the store serve what the workspace records, and does that set hold the artifacts?

Two questions, one report (:class:`VerifyReport`, ``embedline verify [--json]``):

- *served == recorded*: the alias ``qdrant.collection`` points at the collection of the fingerprint
  the workspace's artifacts record (``data/embeddings/manifest.json``, a DVC output, so after
  ``git checkout`` + ``dvc checkout`` it is that commit's). When not, ``ok`` is false and ``fix``
  says in one line what to run.
- *complete*: the recorded set's collection against deduped rows + vectors: missing, orphan and
  stale points, dims, a sample of vectors and payload hashes read back. ``repair`` upserts what is
  missing or stale and deletes orphans (mass-delete guarded); it never moves the alias.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.vectorsets.base import VectorSetMismatchError
from embedline.tasks.vectorsets.build import (
    Workspace,
    guard_deletes,
    open_workspace,
    plan_counts,
    sync,
    sync_plan,
    validate,
    validation_sample,
)
from embedline.tasks.vectorsets.lifecycle import sparse_encoder, validate_collection
from embedline.tasks.vectorsets.stores import VectorStore

MAX_LISTED = 1000  # ids listed per kind (missing, orphans, stale); the counts are exact


@dataclass
class VerifyReport:
    collection: str  # the recorded set's physical collection
    alias: str
    served_collection: str | None
    served_fingerprint: str | None
    recorded_fingerprint: str
    exists: bool
    expected: int
    actual: int
    collections: dict[str, int] = field(default_factory=dict)  # every collection of the alias: points
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    dims_ok: bool = True
    problems: list[str] = field(default_factory=list)  # validation of counts + sampled vectors
    repaired: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # missing / orphans / stale (the lists are capped)

    @property
    def served_ok(self) -> bool:
        return self.served_collection == self.collection

    @property
    def complete(self) -> bool:
        if self.repaired:  # the repair validated the collection (it raises otherwise)
            return True
        return self.exists and self.dims_ok and not (self.missing or self.orphans or self.stale or self.problems)

    @property
    def ok(self) -> bool:
        return self.served_ok and self.complete

    @property
    def fix(self) -> str | None:
        """One line: what is wrong and the command that fixes it (None when ok)."""
        if not self.complete:
            return (f"{self.collection!r} does not hold the workspace's artifacts: run `embedline verify "
                    "--repair` (or `dvc repro`)")
        if not self.served_ok:
            served = self.served_fingerprint or "nothing"
            return (f"the alias {self.alias!r} serves {served}, the workspace records "
                    f"{self.recorded_fingerprint}: run `embedline promote` (or `dvc repro`) to serve it")
        return None

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        counts = d.pop("counts")
        for k in ("missing", "orphans", "stale"):
            d[k] = counts.get(k, len(d[k]))
        d["ok"] = self.ok
        d["fix"] = self.fix
        return d


def collection_counts(store: VectorStore, alias: str) -> dict[str, int]:
    """Points per physical collection of ``alias`` (``<alias>-<fingerprint>``)."""
    return {name: store.count(name) for name in sorted(store.list_collections()) if name.startswith(f"{alias}-")}


def verify(cfg: Config, art: Artifacts, repair: bool = False, *, allow_mass_delete: bool = False) -> VerifyReport:
    """Compare what is served with what the workspace records, and the recorded set with the
    artifacts; with ``repair``, make the recorded set complete (see module doc)."""
    with open_workspace(cfg, art) as ws:
        return _verify(cfg, ws, repair, allow_mass_delete)


def _verify(cfg: Config, ws: Workspace, repair: bool, allow_mass_delete: bool) -> VerifyReport:
    ctx = ws.ctx
    store = ctx.store
    spec = store.describe(ctx.collection)
    prefix = f"{ctx.alias}-"
    report = VerifyReport(
        collection=ctx.collection, alias=ctx.alias, served_collection=ctx.live,
        served_fingerprint=ctx.live.removeprefix(prefix) if ctx.live and ctx.live.startswith(prefix) else ctx.live,
        recorded_fingerprint=ctx.fingerprint, exists=spec is not None, expected=ws.state.desired, actual=0,
        collections=collection_counts(store, ctx.alias),
    )
    if spec is not None:
        report.dims_ok = spec.dims == ctx.dims
        report.actual = store.count(ctx.collection)
    if not report.dims_ok:
        report.problems.append(f"collection dims {spec.dims if spec else '?'} != manifest dims {ctx.dims}")
        if repair:
            raise VectorSetMismatchError(
                f"{ctx.collection!r} holds {spec.dims if spec else '?'}-d vectors but the manifest says "
                f"{ctx.dims}: it cannot be repaired in place; drop it and re-run the upsert"
            )
        return report
    sp = sync_plan(ctx, ws.state, with_ids=False)
    counts = plan_counts(sp)
    report.missing = list(ws.state.ids("adds", MAX_LISTED))
    report.stale = list(ws.state.ids("updates", MAX_LISTED))
    report.orphans = list(ws.state.ids("deletes", MAX_LISTED))
    report.counts = {"missing": counts["adds"], "stale": counts["updates"], "orphans": counts["deletes"]}
    if spec is not None and not (counts["adds"] or counts["updates"]):
        report.problems = validate_collection(
            store, ctx.collection, expected_count=ws.state.desired + counts["deletes"],
            sample=validation_sample(ws), distance=cfg.qdrant.distance, sparse=sparse_encoder(cfg),
        )
    if repair and not report.complete:
        guard_deletes(ctx, sp, allow_mass_delete)
        store.ensure(ctx.spec(embed=cfg.embed.model_dump(mode="json")))
        # vectors/hashes wrong: rewrite all
        everything = bool(report.problems) and not (counts["adds"] or counts["updates"])
        written, deleted = sync(ws, sp, everything=everything)
        validate(ws, "repaired collection")
        report.repaired = {"upserted": written, "deleted": deleted}
        report.actual = store.count(ctx.collection)
        report.collections = collection_counts(store, ctx.alias)
    return report


def served_state(cfg: Config, art: Artifacts) -> dict[str, Any]:
    """What the store serves now, read live and cheaply (no scan): the served collection and
    fingerprint, its point count, the workspace's recorded fingerprint and whether they agree.
    ``served_collection`` is None when there is no store or no alias (nothing is created)."""
    from embedline.tasks.vectorsets.lifecycle import store_for
    from embedline.tasks.vectorsets.promote import workspace_fingerprint

    recorded = workspace_fingerprint(art)
    state: dict[str, Any] = {"alias": cfg.qdrant.collection, "served_collection": None, "served_fingerprint": None,
                             "points_served": None, "recorded_fingerprint": recorded}
    if cfg.qdrant.url is None and not art.resolve(cfg.qdrant.path).exists():
        state["store"] = f"none at {cfg.qdrant.path}"
        return state
    store = store_for(cfg, art)
    spec = store.describe(cfg.qdrant.collection)
    if spec is not None:
        fp = spec.metadata.get("fingerprint")
        state.update(served_collection=spec.name, served_fingerprint=None if fp is None else str(fp),
                     points_served=store.count(spec.name))
    state["served_is_recorded"] = recorded is not None and state["served_fingerprint"] == recorded
    return state
