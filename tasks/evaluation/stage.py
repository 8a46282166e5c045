"""The ``evaluate`` stage and the eval-corpus mode.

- :func:`run_evaluate` (DVC stage ``evaluate``): the labelled query set ``eval.dataset`` (BEIR
  layout, corpus ids = source paths relative to ``source``) against the vector set the pipeline
  built, with the BM25 and whole-document baselines and intrinsic checks; writes the recall curve
  and the embedding map next to the stage metrics. Hybrid (dense + sparse, RRF) is scored too when
  the collection holds the sparse vector (``qdrant.sparse``); ``eval.hybrid=true`` requires it.
- :func:`evaluate_dataset` (``embedline eval --dataset DIR``): ingests a BEIR corpus into its own
  collection (with the sparse vector) with the ordinary stage functions and scores every retrieval
  method on it: dense, BM25, whole-document and hybrid.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, get_args

from embedline.tasks import progress
from embedline.tasks.artifacts import Artifacts, atomic_path
from embedline.tasks.config import Baseline, Config, apply_overrides, validate
from embedline.tasks.evaluation.beir import BeirDataset, is_beir_dir, load_beir
from embedline.tasks.evaluation.gate import collection_embed_params
from embedline.tasks.evaluation.intrinsic import intrinsic_job, write_curve
from embedline.tasks.evaluation.metrics import DocKey, evaluate_run, jsonl_record_key, recall_curve
from embedline.tasks.evaluation.retrieval import EvalContext, Retriever, get_retriever
from embedline.tasks.records import read_json, write_json

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("dense", "bm25", "wholedoc", "hybrid")
NEEDS_SPARSE = frozenset({"hybrid"})  # methods that need the collection's sparse vector
PREPARE_FIRST = frozenset({"wholedoc"})  # retrievers whose set-up is inference: started first
CURVE_FILE = "recall_curve.csv"
MAP_FILE = "embedding_map.png"
CORPUS_PREFIX = "corpus.jsonl#"


def _depth(cfg: Config) -> int:
    return max(10, *cfg.eval.k)


def _prepared(name: str, ctx: EvalContext) -> tuple[Retriever, float]:
    t0 = time.perf_counter()
    return get_retriever(name, ctx), time.perf_counter() - t0


def score_methods(
    ctx: EvalContext, dataset: BeirDataset, methods: Sequence[str] = METHODS
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Metrics per method (+ ``seconds``: its retriever's set-up and its searches) and each
    method's recall@1..max(k) curve.

    Every retriever is set up at once in its own thread while the methods are scored in order:
    the whole-document baseline's inference (ONNX Runtime releases the GIL) then overlaps the
    BM25 index, the dense searches and the imports instead of following them."""
    queries = dataset.evaluable()
    depth = _depth(ctx.cfg)
    ctx.documents()  # read once, before the threads share it
    results: dict[str, dict[str, float]] = {}
    curves: dict[str, list[float]] = {}
    order = sorted(methods, key=lambda m: m not in PREPARE_FIRST)
    with (
        progress.track("eval", total=len(methods), unit="method") as bar,
        ThreadPoolExecutor(max_workers=len(order) or 1, thread_name_prefix="eval-prepare") as pool,
    ):
        ready = {name: pool.submit(_prepared, name, ctx) for name in order}
        for name in methods:
            retriever, setup = ready[name].result()
            t0 = time.perf_counter()
            run = retriever.search(queries, depth)
            metrics = evaluate_run(run, dataset.qrels, ctx.cfg.eval.k)
            metrics["seconds"] = round(setup + time.perf_counter() - t0, 3)
            results[name] = metrics
            curves[name] = recall_curve(run, dataset.qrels, max(ctx.cfg.eval.k))
            log.info("eval %s: ndcg@10=%.4f (%.1fs)", name, metrics["ndcg@10"], metrics["seconds"])
            bar.advance()
    return results, curves


BASELINES = frozenset(get_args(Baseline))  # scored only when listed in ``eval.baselines``


def methods_for(cfg: Config, store: Any, collection: str, methods: Sequence[str] = METHODS) -> list[str]:
    """``methods`` minus the baselines ``eval.baselines`` leaves out, and minus those needing the
    sparse vector when ``collection`` has none (unless ``eval.hybrid`` asks for them: then their
    retriever fails with a clear error)."""
    methods = [m for m in methods if m not in BASELINES or m in cfg.eval.baselines]
    spec = store.describe(collection)
    if cfg.eval.hybrid or (spec is not None and spec.sparse):
        return list(methods)
    skipped = [m for m in methods if m in NEEDS_SPARSE]
    if skipped:
        log.info("eval: %s skipped: %r has no sparse vector (qdrant.sparse=false)",
                 ", ".join(skipped), collection)
    return [m for m in methods if m not in NEEDS_SPARSE]


def _live_collection(cfg: Config, art: Artifacts, store: Any) -> str:
    """The collection the pipeline built: the receipt's, when it exists in the store; else the alias."""
    if art.receipt.exists():
        receipt = read_json(art.receipt)
        for key in ("collection", "physical_collection"):
            name = receipt.get(key)
            if isinstance(name, str) and store.describe(name) is not None:
                return name
    return cfg.qdrant.collection


def _unknown_relevant(ctx: EvalContext, dataset: BeirDataset) -> int:
    """Relevant judged documents that are not in documents.parquet (renamed, rejected, missing)."""
    known = {d.id for d in ctx.documents()}
    return sum(1 for j in dataset.qrels.values() for d, g in j.items() if g > 0 and d not in known)


def run_evaluate(cfg: Config, art: Artifacts, *, collection: str | None = None) -> dict[str, Any]:
    """The ``evaluate`` stage: a flat dict of DVC metrics (see module doc). ``collection`` names a
    collection or alias to score instead of the one the upsert receipt names."""
    t0 = time.perf_counter()
    dataset_dir = art.resolve(cfg.eval.dataset)
    if not is_beir_dir(dataset_dir):
        note = f"no labelled query set at {dataset_dir} (queries.jsonl + qrels/*.tsv): nothing evaluated"
        log.warning(note)
        return {"queries": 0, "note": note}
    from embedline.tasks.vectorsets.stores import open_store

    dataset = load_beir(dataset_dir)
    store = open_store(cfg.qdrant, art.root)
    name = collection or _live_collection(cfg, art, store)
    ctx = EvalContext(cfg=cfg, art=art, collection=name, query_embed=collection_embed_params(store, name, cfg))
    from embedline.tasks.evaluation.coverage import mismatch

    skip = mismatch(dataset, (d.id for d in ctx.documents()), where=f"query set {dataset_dir}")
    if skip:
        log.warning(skip)
        return {"queries": 0, "skipped": skip, "collection": name,
                "seconds": round(time.perf_counter() - t0, 3)}
    # only when the vector set changed (bounded sample): the store is read here, t-SNE, silhouette
    # and the map PNG run in a thread while the methods embed and search: ONNX Runtime and BLAS
    # release the GIL, and a first evaluate is mostly inference
    finish_intrinsic = intrinsic_job(store, name, art, sample=cfg.eval.map_sample, map_path=art.metrics / MAP_FILE)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-intrinsic") as pool:
        intrinsic_future = pool.submit(finish_intrinsic)
        results, curves = score_methods(ctx, dataset, methods_for(cfg, store, name))
        write_curve(art.metrics / CURVE_FILE, curves)
        intrinsic = intrinsic_future.result()
    out: dict[str, Any] = {}
    for method, metrics in results.items():
        prefix = "" if method == "dense" else f"{method}_"
        for key, value in metrics.items():
            if key == "seconds":
                out[f"{method}_seconds"] = value
            elif key != "queries":
                out[f"{prefix}{key}"] = round(value, 6)
    out.update(intrinsic)
    out["queries"] = int(results["dense"]["queries"])
    out["unknown_relevant_docs"] = _unknown_relevant(ctx, dataset)
    out["collection"] = name
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


# ---- eval corpus mode ----------------------------------------------------------------------------
def eval_collection_name(dataset_dir: Path) -> str:
    """``eval-<folder name>`` (lower case; characters outside [a-z0-9._-] become '-')."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", dataset_dir.resolve().name.lower()).strip("-._")
    return f"eval-{slug or 'dataset'}"


def _expose_corpus(corpus: Path, source_dir: Path) -> Path:
    """Put ``corpus.jsonl`` into ``source_dir``: a hard link when possible, else a copy (a symlink
    would point outside the source root, which preprocess rightly rejects). Unchanged: left alone."""
    source_dir.mkdir(parents=True, exist_ok=True)
    target = source_dir / "corpus.jsonl"
    src_stat = corpus.stat()
    if target.exists():
        st = target.stat()
        if st.st_ino == src_stat.st_ino or (
            st.st_size == src_stat.st_size and int(st.st_mtime) == int(src_stat.st_mtime)
        ):
            return target
        target.unlink()
    with atomic_path(target) as tmp:
        try:
            os.link(corpus, tmp)
        except OSError:
            shutil.copy2(corpus, tmp)
    return target


def dataset_config(cfg: Config, dataset_dir: Path, workdir: Path) -> Config:
    """``cfg`` redirected to the dataset: its own source folder, store and collection."""
    data = cfg.model_dump(mode="json")
    overrides: Mapping[str, Any] = {
        "source": str((workdir / "source").resolve()),
        "qdrant.collection": eval_collection_name(dataset_dir),
        "qdrant.path": str((workdir / "qdrant").resolve()),
        "preprocess.json_text_field": "text",
        "preprocess.json_id_field": "_id",
        "preprocess.json_title_field": "title",
        "eval.dataset": str(dataset_dir.resolve()),
        "eval.gate": False,
        "qdrant.sparse": True,  # so the hybrid method can be scored next to the others
    }
    return validate(apply_overrides(data, dict(overrides)))


def evaluate_dataset(
    cfg: Config,
    dataset_dir: Path,
    workdir: Path,
    *,
    methods: Sequence[str] = METHODS,
    split: str | None = None,
) -> dict[str, dict[str, float]]:
    """Ingest a BEIR dataset into its own collection and score each method on it.

    Returns ``{method: {"ndcg@10", "mrr@10", "recall@<k>" for each eval.k, "seconds"}}``; the full
    report (stage stats, timings, dataset sizes) is written to ``workdir/report.json``.
    """
    from embedline.tasks.pipeline import INGEST_STAGES, run_stage
    from embedline.tasks.vectorsets.stores import open_store

    t0 = time.perf_counter()
    dataset_dir = Path(dataset_dir)
    if not is_beir_dir(dataset_dir) or not (dataset_dir / "corpus.jsonl").is_file():
        raise FileNotFoundError(
            f"{dataset_dir} is not a BEIR dataset with a corpus (corpus.jsonl, queries.jsonl, qrels/*.tsv)"
        )
    dataset = load_beir(dataset_dir, split)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _expose_corpus(dataset_dir / "corpus.jsonl", workdir / "source")
    dcfg = dataset_config(cfg, dataset_dir, workdir)
    art = Artifacts(workdir)
    stages: dict[str, Any] = {}
    for stage in INGEST_STAGES:
        options = {"allow_mass_delete": True} if stage == "upsert" else {}
        stages[stage] = run_stage(stage, dcfg, art, **options)
        log.info("eval %s: %s done in %.1fs", eval_collection_name(dataset_dir), stage, stages[stage]["seconds"])
    ingest_seconds = time.perf_counter() - t0

    key: DocKey = jsonl_record_key(CORPUS_PREFIX)
    store = open_store(dcfg.qdrant, art.root)
    collection = dcfg.qdrant.collection
    ctx = EvalContext(cfg=dcfg, art=art, collection=collection, key=key, query_embed=dcfg.embed)
    results, curves = score_methods(ctx, dataset, methods_for(dcfg, store, collection, methods))
    write_curve(workdir / CURVE_FILE, curves)
    report = {
        "dataset": str(dataset_dir.resolve()),
        "split": dataset.split,
        "collection": collection,
        "physical_collection": store.get_alias(collection),
        "queries": len(dataset.evaluable()),
        "documents": len(ctx.documents()),
        "points": store.count(collection),
        "unknown_relevant_docs": _unknown_relevant(ctx, dataset),
        "model": dcfg.embed.model,
        "results": results,
        "stages": stages,
        "seconds_ingest": round(ingest_seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_json(workdir / "report.json", report)
    return results
