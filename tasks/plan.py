"""`embedline plan` / `ingest --dry-run`: what an ingest would do now, without writing anything.

The current corpus is preprocessed and chunked into a scratch workspace (the project's artifacts,
Qdrant store and embedding cache are only read). When every chunk text is already in the embedding
cache, embed + dedupe run there too (paying nothing) and the sync plan is exact. Otherwise the plan
says how many texts (and, for API providers, tokens) would be paid for, and estimates the point
changes at chunk level (near-duplicate collapse needs the vectors, so it is marked as an estimate).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, apply_overrides, validate
from embedline.tasks.records import Chunk, iter_records, point_id_for


def scratch_config(cfg: Config, root: Path) -> Config:
    """``cfg`` with every project-relative path made absolute (so a scratch workspace reads the
    project's source, store, cache and models)."""
    data = cfg.model_dump(mode="json")
    overrides: dict[str, Any] = {
        "source": str(_abs(root, cfg.source)),
        "qdrant.path": str(_abs(root, cfg.qdrant.path)),
        "embed.cache_path": str(_abs(root, cfg.embed.cache_path)),
        "eval.dataset": str(_abs(root, cfg.eval.dataset)),
    }
    if "models_dir" in data["embed"]:
        overrides["embed.models_dir"] = str(_abs(root, data["embed"]["models_dir"]))
    return validate(apply_overrides(data, overrides))


def _abs(root: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else (root / q).resolve()


def _chunk_level_ids(art: Artifacts) -> set[str]:
    """Point ids after exact dedupe (one representative chunk per text hash: the smallest id)."""
    rep: dict[str, str] = {}
    for ch in iter_records(art.chunks, Chunk):
        cur = rep.get(ch.text_hash)
        if cur is None or ch.chunk_id < cur:
            rep[ch.text_hash] = ch.chunk_id
    return {point_id_for(c) for c in rep.values()}


def plan_ingest(cfg: Config, art: Artifacts) -> dict[str, Any]:
    """Plan an ingest of ``cfg.source`` into the project at ``art.root``; writes nothing there."""
    from embedline.tasks.embed import plan_embed, run_embed
    from embedline.tasks.embed.auto import resolve_auto
    from embedline.tasks.pipeline import stage_function
    from embedline.tasks.vectorsets.build import plan as sync_plan

    scfg = scratch_config(cfg, art.root.resolve())
    with tempfile.TemporaryDirectory(prefix="embedline-plan-") as tmp:
        work = Artifacts(Path(tmp))
        pre = stage_function("preprocess")(scfg, work)
        chk = stage_function("chunk")(scfg, work)
        # embed.backend=auto: the calibrated backend names the vector set (calibrated, the first
        # time on this machine, on the corpus's real chunks)
        scfg = resolve_auto(scfg, work)
        backlog = plan_embed(scfg, work)
        out: dict[str, Any] = {
            "documents": pre.get("documents"),
            "rejected": pre.get("rejected"),
            "chunks": chk.get("chunks"),
            "texts_to_embed": int(backlog.get("texts_to_embed", 0)),
        }
        if backlog.get("tokens_to_embed") is not None:
            out["tokens_to_embed"] = backlog["tokens_to_embed"]
        if out["texts_to_embed"] == 0:
            run_embed(scfg, work)  # all cache hits: nothing is paid for
            stage_function("dedupe")(scfg, work)
            sp = sync_plan(scfg, work)
            out.update({k: v for k, v in sp.counts().items() if k not in out})
            out["exact"] = True
            return out
        out.update(_estimate(scfg, work))
        out["exact"] = False
        return out


def _estimate(cfg: Config, work: Artifacts) -> dict[str, Any]:
    """Chunk-level adds/deletes against the collection of this fingerprint (no vectors needed)."""
    from embedline.tasks.embed import fingerprint_for
    from embedline.tasks.vectorsets.lifecycle import physical_name
    from embedline.tasks.vectorsets.stores import open_store

    store = open_store(cfg.qdrant, work.root)
    target = physical_name(cfg.qdrant, fingerprint_for(cfg))
    desired = _chunk_level_ids(work)
    existing: set[str] = set()
    if store.describe(target) is not None:
        existing = {p.id for p in store.scan(target, with_payload=False)}
    deletes = len(existing - desired)
    return {
        "collection": target,
        "live_collection": store.get_alias(cfg.qdrant.collection),
        "new_vector_set": store.get_alias(cfg.qdrant.collection) != target,
        "adds": len(desired - existing),
        "deletes": deletes,
        "unchanged": len(desired & existing),
        "existing": len(existing),
        "mass_delete": bool(existing) and deletes / len(existing) > cfg.qdrant.max_delete_fraction,
        "note": "estimate: new texts are not embedded yet, so near-duplicate collapse is unknown",
    }
