"""The quality gate: a new vector set replaces the live one only if it is not measurably worse.

:func:`make_gate` returns the callable :func:`embedline.tasks.vectorsets.promote.promote` invokes as
``gate(shadow_collection, live_collection)`` before swapping the alias. It scores both collections
(dense nDCG@10 on ``eval.dataset``, each queried with its own embedder) and raises
:class:`QualityGateError` when ``shadow < live - eval.max_regression``; the shadow collection is
left in place for inspection. It does nothing when ``eval.gate`` is false, when there is no live
collection yet, or when the dataset folder is missing.
"""

from __future__ import annotations

import logging
from typing import Any

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, EmbedParams
from embedline.tasks.evaluation.beir import BeirDataset, is_beir_dir, load_beir
from embedline.tasks.evaluation.metrics import evaluate_run
from embedline.tasks.evaluation.retrieval import DenseRetriever, EvalContext

log = logging.getLogger(__name__)
GATE_METRIC = "ndcg@10"


class QualityGateError(RuntimeError):
    """The shadow vector set scores worse than the live one by more than eval.max_regression."""

    def __init__(self, shadow: str, live: str, shadow_score: float, live_score: float, max_regression: float):
        self.shadow, self.live = shadow, live
        self.shadow_score, self.live_score = shadow_score, live_score
        self.max_regression = max_regression
        super().__init__(
            f"quality gate: new vector set {shadow!r} has {GATE_METRIC} {shadow_score:.4f}, "
            f"live {live!r} has {live_score:.4f}; the drop {live_score - shadow_score:.4f} exceeds "
            f"eval.max_regression={max_regression}. The alias was not swapped; {shadow!r} is kept for "
            "inspection (set eval.gate=false or raise eval.max_regression to accept it)"
        )


class GateSetupError(RuntimeError):
    """The gate cannot score a collection (e.g. it does not know the live collection's embedder)."""


def collection_embed_params(store: Any, collection: str, cfg: Config) -> EmbedParams:
    """The embed params that produced ``collection``, to embed its queries with.

    In order: the ``embed`` params recorded in the collection's metadata, if any; ``cfg.embed`` when
    the collection's fingerprint is the current one; else ``cfg.embed`` with the recorded
    ``provider`` and ``model``, and ``dimensions`` set to the collection's width when the model's
    natural width differs (Matryoshka truncation). A width that cannot be matched is a clear error.
    """
    spec = store.describe(collection)
    if spec is None:
        from embedline.tasks.vectorsets.stores import CollectionNotFoundError

        raise CollectionNotFoundError(collection)
    meta = dict(spec.metadata or {})
    known = set(EmbedParams.model_fields)
    stored = meta.get("embed")
    if isinstance(stored, dict):
        merged = {**cfg.embed.model_dump(), **{k: v for k, v in stored.items() if k in known}}
        return EmbedParams.model_validate(merged)
    from embedline.tasks.embed import fingerprint_for, get_embedder

    if meta.get("fingerprint") is not None and meta.get("fingerprint") == fingerprint_for(cfg):
        return cfg.embed
    base = cfg.embed.model_dump()
    for key in ("provider", "model"):
        if meta.get(key):
            base[key] = meta[key]
    base["dimensions"] = None
    params = EmbedParams.model_validate(base)
    natural = get_embedder(params).dims
    if natural == spec.dims:
        return params
    if spec.dims < natural:
        return EmbedParams.model_validate({**base, "dimensions": spec.dims})
    raise GateSetupError(
        f"collection {collection!r} holds {spec.dims}-d vectors but its model "
        f"{params.provider}:{params.model} gives {natural}-d: cannot embed queries for it"
    )


def dense_metrics(
    cfg: Config, art: Artifacts, collection: str, dataset: BeirDataset, *, embed: EmbedParams | None = None
) -> dict[str, float]:
    """Dense retrieval metrics of one collection on ``dataset`` (doc ids = payload sources)."""
    from embedline.tasks.vectorsets.stores import open_store

    store = open_store(cfg.qdrant, art.root)
    params = embed or collection_embed_params(store, collection, cfg)
    ctx = EvalContext(cfg=cfg, art=art, collection=collection, query_embed=params)
    queries = dataset.evaluable()
    depth = max(10, *cfg.eval.k)
    run = DenseRetriever(ctx).search(queries, depth)
    return evaluate_run(run, dataset.qrels, cfg.eval.k)


class QualityGate:
    """``gate(shadow, live)``; ``last`` holds the scores of the latest decision (for reports)."""

    def __init__(self, cfg: Config, art: Artifacts):
        self.cfg = cfg
        self.art = art
        self.last: dict[str, Any] = {}

    def __call__(self, shadow: str, live: str | None) -> None:
        ev = self.cfg.eval
        if not ev.gate:
            self.last = {"gate": "off"}
            return
        if live is None or live == shadow:
            self.last = {"gate": "no live collection"}
            return
        dataset_dir = self.art.resolve(ev.dataset)
        if not is_beir_dir(dataset_dir):
            log.warning("quality gate skipped: no labelled query set at %s", dataset_dir)
            self.last = {"gate": f"skipped: no dataset at {dataset_dir}"}
            return
        dataset = load_beir(dataset_dir)
        from embedline.tasks.evaluation.coverage import mismatch

        corpus = EvalContext(cfg=self.cfg, art=self.art, collection=shadow, query_embed=self.cfg.embed)
        skip = mismatch(dataset, (d.id for d in corpus.documents()), where=f"query set {dataset_dir}")
        if skip:
            log.warning("quality gate skipped: %s", skip)
            self.last = {"gate": f"skipped: {skip}"}
            return
        # each set is queried with the embed params recorded in its metadata (a shadow an
        # experiment built may use another model than cfg.embed)
        s = dense_metrics(self.cfg, self.art, shadow, dataset)[GATE_METRIC]
        live_m = dense_metrics(self.cfg, self.art, live, dataset)[GATE_METRIC]
        passed = s >= live_m - ev.max_regression
        self.last = {
            "gate": "passed" if passed else "refused",
            "shadow": shadow,
            "live": live,
            f"shadow_{GATE_METRIC}": round(s, 6),
            f"live_{GATE_METRIC}": round(live_m, 6),
            "max_regression": ev.max_regression,
        }
        log.info(
            "quality gate %s: %s %s=%.4f vs live %s %.4f (max regression %s)",
            self.last["gate"], shadow, GATE_METRIC, s, live, live_m, ev.max_regression,
        )
        if not passed:
            raise QualityGateError(shadow, live, s, live_m, ev.max_regression)


def make_gate(cfg: Config, art: Artifacts) -> QualityGate:
    """The gate :func:`embedline.tasks.vectorsets.promote.promote` calls before swapping the alias (see module doc)."""
    return QualityGate(cfg, art)
