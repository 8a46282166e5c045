"""Into the lifecycle: a fine-tuned model earns the alias only through the quality gate.

:func:`serve_finetuned` builds the fine-tuned model's vector set of the served corpus as a *shadow*
(its own fingerprinted collection, next to the served one), with the ordinary stage functions in a
scratch folder (``data/finetune/shadow``: the pipeline's DVC outputs are left as they are), then
hands it to the upsert's alias swap behind :func:`finetuned_gate`: the leakage check (the
model's training queries must not be among the gate's held-out queries), then the existing
quality gate (:mod:`embedline.tasks.evaluation.gate`: nDCG@10 on ``eval.dataset``'s held-out
split, shadow vs served, ``eval.max_regression``). A model that loses is refused: the alias stays
on the served set and the shadow is kept for inspection.

To keep it after a promotion, name it in params.yaml (``embed.model: models/finetuned``): the
next ``dvc repro`` records that vector set (nothing is re-embedded: the cache holds it) and its
upsert runs behind the same gate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import FINETUNE_PROVIDER, Config, apply_overrides, validate
from embedline.tasks.finetune.pairs import check_no_leakage, text_hash
from embedline.tasks.finetune.train import read_model_info, require_trained

log = logging.getLogger(__name__)

SHADOW_DIR = "data/finetune/shadow"
BUILD_STAGES = ("preprocess", "chunk", "embed", "dedupe")


def check_gate_queries(cfg: Config, art: Artifacts, info: dict[str, Any] | None) -> int:
    """Raise LeakageError when a query the model was trained on is among the gate's held-out
    queries (compared by normalised text, so renamed ids do not hide it); returns how many
    held-out queries were checked."""
    from embedline.tasks.evaluation.beir import is_beir_dir, load_beir

    dataset_dir = art.resolve(cfg.eval.dataset)
    if info is None or not is_beir_dir(dataset_dir):
        return 0
    held_out = {text_hash(t) for t in load_beir(dataset_dir).evaluable().values()}
    check_no_leakage(info.get("train_query_hashes", []), held_out, f"queries of {dataset_dir.name} (by text)")
    return len(held_out)


class FinetunedGate:
    """``gate(shadow, live)``: the leakage check, then the existing quality gate."""

    def __init__(self, cfg: Config, art: Artifacts):
        from embedline.tasks.evaluation.gate import make_gate

        self.cfg, self.art = cfg, art
        self.info = read_model_info(cfg.embed.model)
        self.inner = make_gate(cfg, art)

    @property
    def last(self) -> dict[str, Any]:
        return dict(self.inner.last)

    def __call__(self, shadow: str, live: str | None) -> None:
        check_gate_queries(self.cfg, self.art, self.info)
        self.inner(shadow, live)


def finetuned_gate(cfg: Config, art: Artifacts) -> FinetunedGate:
    """The gate for a vector set embedded by ``cfg.embed.model`` (fine-tuned or not)."""
    return FinetunedGate(cfg, art)


def shadow_config(cfg: Config, art: Artifacts, model_dir: Path) -> Config:
    """``cfg`` embedding with ``model_dir``, every project path absolute (the scratch artifacts
    root differs from the project's; the store, the cache, the source and the gate's dataset are
    the project's)."""
    overrides = {
        "embed.provider": FINETUNE_PROVIDER,
        "embed.model": str(model_dir.resolve()),
        "embed.revision": None,
        "source": str(art.resolve(cfg.source).resolve()),
        "embed.cache_path": str(art.resolve(cfg.embed.cache_path).resolve()),
        "embed.models_dir": str(art.resolve(cfg.embed.models_dir).resolve()),
        "eval.dataset": str(art.resolve(cfg.eval.dataset).resolve()),
        "eval.gate": True,
    }
    if cfg.embed.backend == "auto":
        # a fine-tuned model is a new local folder per training run: embed it with torch (what it
        # was trained in) rather than calibrate and export every one; an explicit backend is kept
        overrides.update({"embed.backend": "torch", "embed.precision": "fp32"})
    if cfg.qdrant.backend != "server":
        overrides["qdrant.path"] = str(art.resolve(cfg.qdrant.path).resolve())
    return validate(apply_overrides(cfg.model_dump(mode="json"), overrides))


def build_and_promote(cfg: Config, art: Artifacts, gate: Any, *, allow_mass_delete: bool = False) -> dict[str, Any]:
    """Build the vector set of ``art``'s artifacts, then serve it if ``gate(shadow, live)`` passes
    (the store's build + promote; ``gate`` raises to refuse)."""
    from embedline.tasks.vectorsets.build import run_build
    from embedline.tasks.vectorsets.promote import promote

    run_build(cfg, art, allow_mass_delete=allow_mass_delete)
    return promote(cfg, art, gate=gate, allow_mass_delete=allow_mass_delete)


def serve_finetuned(
    cfg: Config, art: Artifacts, model: str | None = None, *, allow_mass_delete: bool = False
) -> dict[str, Any]:
    """Build the shadow vector set of ``model`` (default ``finetune.output``), gate it, promote it
    if it passes. Returns ``promoted``, the collections and the gate's scores; a refusal is a
    result (``promoted: False`` + ``reason``), not an exception."""
    from embedline.tasks.evaluation.gate import QualityGateError
    from embedline.tasks.pipeline import run_stage

    model_dir = art.resolve(model or cfg.finetune.output)
    info = require_trained(model_dir)
    tuned = shadow_config(cfg, art, model_dir)
    scratch = Artifacts(art.resolve(SHADOW_DIR))
    for stage in BUILD_STAGES:
        run_stage(stage, tuned, scratch)
    gate = finetuned_gate(tuned, scratch)
    result: dict[str, Any] = {"model": str(model), "model_fingerprint": info.get("fingerprint")}
    try:
        stats = build_and_promote(tuned, scratch, gate, allow_mass_delete=allow_mass_delete)
    except QualityGateError as exc:
        log.warning("%s", exc)
        return {**result, "promoted": False, "collection": exc.shadow, "served": exc.live,
                **gate.last, "reason": str(exc)}
    from embedline.tasks.vectorsets.stores import open_store

    served = open_store(tuned.qdrant, scratch.root).get_alias(tuned.qdrant.collection)
    return {**result, "promoted": served == stats.get("collection"), "collection": stats.get("collection"),
            "previous_collection": stats.get("previous_collection"), **gate.last}
