"""The ``finetune`` stage (``embedline stage finetune``, ``embedline finetune``).

1. Where the passages come from (the *current vector set*):
   - ``finetune.dataset`` has a ``corpus.jsonl``: the base model's vector set of that corpus, built
     (or synced, through the embedding cache) exactly as ``embedline eval --dataset`` builds it, in
     ``data/eval-runs/<name>``; its held-out split is scored on the way (the base numbers);
   - else: the vector set the pipeline serves (the ``qdrant.collection`` alias).
2. Pairs: ``qrels/<train_split>.tsv`` of the dataset when present (a query id also in
   ``<eval_split>`` is an error), else mined from the passages (titles, headings); a seeded sample
   of ``max_pairs``; one hard negative each from the vector set (tasks/finetune/pairs.py).
3. ``data/finetune/pairs.jsonl`` (the versioned pairs) and the model in ``finetune.output``.
4. With a corpus: the fine-tuned model's vector set of the same corpus is built and scored on the
   held-out split: the metrics hold base vs fine-tuned nDCG@10, MRR@10 and recall@100.

``finetune.enabled=false`` (the default) makes the DVC stage record that it is off; the
``embedline finetune`` command always trains.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import FINETUNE_PROVIDER, Config, EmbedParams, apply_overrides, validate
from embedline.tasks.evaluation.beir import is_beir_dir, load_qrels, load_queries
from embedline.tasks.evaluation.metrics import DocKey, jsonl_record_key
from embedline.tasks.finetune.pairs import (
    Pair,
    PairStats,
    Passage,
    add_hard_negatives,
    beir_pairs,
    check_no_leakage,
    document_texts,
    fill_negatives,
    mined_pairs,
    sample_pairs,
    write_pairs,
)
from embedline.tasks.finetune.train import model_fingerprint, train_model, write_placeholder

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.jsonl"
REPORTED = ("ndcg@10", "mrr@10", "recall@100")


def pairs_path(art: Artifacts) -> Path:
    return art.root / "data" / "finetune" / PAIRS_FILE


@dataclass(frozen=True)
class VectorSetSource:
    """A vector set to read passages from: the config of its store, its root, its collection."""

    cfg: Config
    art: Artifacts
    collection: str
    key: DocKey | None = None  # payload source -> document key (identity when None)


def with_model(cfg: Config, model: str) -> Config:
    """``cfg`` embedding with the local model ``model`` (a revision pinned for another model does not
    apply), on torch fp32: the backend the model is trained in, the same for the base and the
    fine-tuned model (``embed.backend: auto`` would calibrate and export every new fine-tuned
    model, and could score the two on different backends)."""
    return validate(apply_overrides(cfg.model_dump(mode="json"), {
        "embed.provider": FINETUNE_PROVIDER, "embed.model": model, "embed.revision": None,
        "embed.backend": "torch", "embed.precision": "fp32",
    }))


def load_passages(src: VectorSetSource) -> tuple[list[Passage], np.ndarray, EmbedParams]:
    """Every point of the vector set (sorted by id) with its vector, and the embed params it was
    built with (anchors are embedded with them)."""
    from embedline.tasks.evaluation.gate import collection_embed_params
    from embedline.tasks.vectorsets.stores import open_store

    store = open_store(src.cfg.qdrant, src.art.root)
    params = collection_embed_params(store, src.collection, src.cfg)
    rows: list[tuple[Passage, np.ndarray]] = []
    for rec in store.scan(src.collection, with_vectors=True, with_payload=True):
        pl = dict(rec.payload or {})
        # ``sources``: the duplicates dedupe collapsed into this point ({"source": ..., ...} each)
        sources = [pl.get("source", ""), *(d.get("source", "") if isinstance(d, dict) else str(d)
                                           for d in pl.get("sources") or [])]
        docs: list[str] = []
        for s in sources:
            k = src.key(s) if src.key is not None else s
            if k and k not in docs:
                docs.append(k)
        if not docs or rec.vector is None:
            continue
        rows.append((
            Passage(
                point_id=rec.id, docs=tuple(docs), text=str(pl.get("text") or ""),
                title=str(pl.get("title") or ""), heading_path=tuple(pl.get("heading_path") or ()),
                chunk_index=int(pl.get("chunk_index") or 0),
            ),
            np.asarray(rec.vector, dtype=np.float32),
        ))
    rows.sort(key=lambda r: r[0].point_id)
    if not rows:
        raise ValueError(f"vector set {src.collection!r} holds no points to mine pairs from: ingest first")
    return [r[0] for r in rows], np.stack([r[1] for r in rows]), params


def _split_file(dataset: Path, split: str) -> Path:
    return dataset / "qrels" / f"{split}.tsv"


def make_pairs(
    cfg: Config, dataset: Path, passages: list[Passage], stats: PairStats
) -> tuple[list[Pair], str]:
    """The pairs ``finetune.pairs`` asks for; (pairs, source). ``auto``: labelled pairs from the
    train split when there is one, else mined ones; ``labelled``: the train split (an error without
    one); ``mined``: titles/headings -> their text, from the passages (no query is read); ``both``:
    the labelled pairs followed by the mined ones. Labelled pairs always pass the leakage check."""
    ft = cfg.finetune
    train_file = _split_file(dataset, ft.train_split)
    has_train = is_beir_dir(dataset) and train_file.is_file()
    mode = ft.pairs if ft.pairs != "auto" else ("labelled" if has_train else "mined")
    if mode in ("labelled", "both") and not has_train:
        raise FileNotFoundError(
            f"finetune.pairs={ft.pairs} needs a BEIR train split, and {train_file} is not one: "
            "set finetune.pairs to auto or mined, or finetune.dataset/train_split to a folder with one"
        )
    pairs: list[Pair] = []
    sources: list[str] = []
    if mode in ("labelled", "both"):
        train = load_qrels(train_file)
        held_out = _split_file(dataset, ft.eval_split)
        if held_out.is_file():
            check_no_leakage(train, load_qrels(held_out), f"query ids of {dataset.name}")
        queries = load_queries(dataset / "queries.jsonl")
        pairs += beir_pairs(queries, train, document_texts(passages), stats)
        sources.append("train-split")
    if mode in ("mined", "both"):
        pairs += mined_pairs(passages, ft.min_anchor_chars, stats)
        sources.append("mined")
    return pairs, "+".join(sources)


def cap_pairs(pairs: list[Pair], max_pairs: int, seed: int, stats: PairStats) -> list[Pair]:
    """A seeded sample of ``max_pairs`` when there are more, never silently: the metrics count the
    pairs left out (``pairs_over_max_pairs``) and a warning says so."""
    if len(pairs) > max_pairs:
        stats.add("over_max_pairs", len(pairs) - max_pairs)
        log.warning("finetune: %d pairs but finetune.max_pairs=%d: training on a seeded sample of %d",
                    len(pairs), max_pairs, max_pairs)
    return sample_pairs(pairs, max_pairs, seed)


def _negatives(
    pairs: list[Pair], passages: list[Passage], vectors: np.ndarray, params: EmbedParams, cfg: Config,
    stats: PairStats, labelled: bool,
) -> list[Pair]:
    ft = cfg.finetune
    if ft.hard_negatives and pairs:
        from embedline.tasks.evaluation.interface import embed_queries

        anchors = embed_queries(params, [p.anchor for p in pairs])
        docs = document_texts(passages)
        # labelled positives are whole documents: so are their negatives
        text_of = (lambda p: docs.get(p.docs[0], p.text)) if labelled else None
        pairs = add_hard_negatives(
            pairs, anchors, passages, vectors, depth=ft.negative_depth,
            near_duplicate=ft.near_duplicate, negative_text=text_of, stats=stats,
        )
        pairs = fill_negatives(pairs, ft.seed, stats)
    return pairs


def _scores(results: dict[str, dict[str, float]]) -> dict[str, float]:
    dense = results.get("dense", {})
    return {m: round(float(dense[m]), 6) for m in REPORTED if m in dense}


def run_finetune(cfg: Config, art: Artifacts, *, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """The stage (see module doc). ``force`` trains even when ``finetune.enabled`` is false."""
    ft = cfg.finetune
    out_dir = art.resolve(ft.output)
    if not (ft.enabled or force):
        write_pairs(pairs_path(art), [])
        write_placeholder(out_dir, "finetune.enabled is false")
        return {"enabled": False, "pairs": 0}
    t0 = time.perf_counter()
    from embedline.tasks.embed.providers.sentence_transformers import revision_for
    from embedline.tasks.tokenize import resolve_model

    dataset = art.resolve(ft.dataset)
    base_cfg = with_model(cfg, ft.base_model)
    stats: dict[str, Any] = {"enabled": True, "base_model": ft.base_model, "dataset": ft.dataset}
    with_corpus = is_beir_dir(dataset) and (dataset / "corpus.jsonl").is_file()
    if with_corpus:
        from embedline.tasks.evaluation.stage import (
            dataset_config,
            eval_collection_name,
            evaluate_dataset,
        )

        workdir = art.root / "data" / "eval-runs" / dataset.resolve().name
        base = evaluate_dataset(base_cfg, dataset, workdir, methods=("dense",), split=ft.eval_split)
        stats.update({f"base_{k}": v for k, v in _scores(base).items()})
        src = VectorSetSource(dataset_config(base_cfg, dataset, workdir), Artifacts(workdir),
                              eval_collection_name(dataset), jsonl_record_key("corpus.jsonl#"))
    else:
        src = VectorSetSource(cfg, art, cfg.qdrant.collection)
    passages, vectors, params = load_passages(src)
    pstats = PairStats()
    pairs, source = make_pairs(cfg, dataset, passages, pstats)
    pairs = cap_pairs(pairs, ft.max_pairs, ft.seed, pstats)
    pairs = _negatives(pairs, passages, vectors, params, cfg, pstats, source != "mined")
    sha = write_pairs(pairs_path(art), pairs)
    stats.update({"pair_source": source, "pairs": len(pairs), "passages": len(passages),
                  "vector_set": src.collection})
    stats.update({f"pairs_{k.replace('-', '_')}": v for k, v in sorted(pstats.counts.items())})
    base_path = resolve_model(ft.base_model)
    base_rev = revision_for(base_cfg.embed)
    fingerprint = model_fingerprint(ft.base_model, base_rev, sha, ft)
    info = {"base_model": ft.base_model, "base_revision": base_rev, "pairs_sha256": sha,
            "params": {k: v for k, v in ft.model_dump(mode="json").items()}, "fingerprint": fingerprint}
    log.info("finetune: %d pairs (%s) from %s, training %s", len(pairs), source, src.collection, ft.base_model)
    t1 = time.perf_counter()
    stats.update(train_model(pairs, base_path, out_dir, ft, info=info, progress=progress))
    stats["train_seconds"] = round(time.perf_counter() - t1, 3)
    stats["model_fingerprint"] = fingerprint
    if with_corpus:
        tuned = evaluate_dataset(with_model(cfg, str(out_dir)), dataset, workdir, methods=("dense",),
                                 split=ft.eval_split)
        scores = _scores(tuned)
        stats.update({f"finetuned_{k}": v for k, v in scores.items()})
        stats.update({f"delta_{k}": round(v - stats.get(f"base_{k}", 0.0), 6) for k, v in scores.items()})
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return stats
