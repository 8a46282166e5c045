"""Evaluation: retrieval metrics on BEIR-layout query sets, baselines, intrinsic checks, the gate.

Public API::

    run_evaluate(cfg, art, *, collection=None) -> dict        the DVC `evaluate` stage (flat metrics)
    evaluate_dataset(cfg, dataset_dir, workdir) -> dict      ingest a BEIR corpus + score each method
    make_gate(cfg, art) -> QualityGate                        gate(shadow, live) for promote
    QualityGateError                                          raised by the gate to refuse a swap
    load_beir(dir, split=None) -> BeirDataset                 queries + qrels (+ corpus path)
    evaluate_run(run, qrels, ks) -> dict                      nDCG@10, MRR@10, recall@k
    docs_from_hits(hits, key=None) -> dict                    chunk hits -> documents (max score)
    RETRIEVERS / get_retriever(name, ctx)                     dense | bm25 | wholedoc | hybrid
    methods_for(cfg, store, collection) -> list[str]          METHODS the collection can answer

Modules: beir (loader), metrics, retrieval (interface + dense), baselines (BM25, whole-document),
intrinsic (duplicate rate, silhouette, 2-D map, curve file), gate, stage. Heavy pieces (models,
stores, bm25s, scikit-learn, Pillow) load on first use.
"""

from embedline.tasks.evaluation.beir import BeirDataset, BeirFormatError, load_beir
from embedline.tasks.evaluation.gate import GateSetupError, QualityGate, QualityGateError, make_gate
from embedline.tasks.evaluation.metrics import docs_from_hits, evaluate_run, recall_curve
from embedline.tasks.evaluation.retrieval import RETRIEVERS, EvalContext, Retriever, get_retriever
from embedline.tasks.evaluation.stage import (
    METHODS,
    eval_collection_name,
    evaluate_dataset,
    methods_for,
    run_evaluate,
)

__all__ = [
    "METHODS",
    "RETRIEVERS",
    "BeirDataset",
    "BeirFormatError",
    "EvalContext",
    "GateSetupError",
    "QualityGate",
    "QualityGateError",
    "Retriever",
    "docs_from_hits",
    "eval_collection_name",
    "evaluate_dataset",
    "evaluate_run",
    "get_retriever",
    "load_beir",
    "make_gate",
    "methods_for",
    "recall_curve",
    "run_evaluate",
]
