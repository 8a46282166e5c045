"""Tune dense + BM25 fusion (tasks/vectorsets/fusion.py) on a BEIR set already ingested by
``embedline eval --dataset DIR`` (its work dir: data/eval-runs/<name>).

    .venv/bin/python benchmarks/tune_fusion.py /work/shared/datasets/cranfield [--workdir DIR]

Fetches the dense and the sparse chunk lists once per query, then scores every fusion setting
offline: document-level weighted RRF over (k, sparse weight), chunk-level RRF (what Qdrant's
server-side fusion does), and min-max score fusion. Writes benchmarks/results/fusion_<name>.json.
Tune on Cranfield and the project's own sets only, never on held-out collections.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _minmax(hits: list, key) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from embedline.tasks.vectorsets.fusion import group_by_document

    docs = group_by_document(hits, key=key)
    if not docs:
        return {}
    hi, lo = docs[0].score, docs[-1].score
    span = (hi - lo) or 1.0
    return {d.doc: (d.score - lo) / span for d in docs}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--depth", type=int, default=100, help="chunk hits fetched from each list")
    args = ap.parse_args()

    from embedline.tasks.artifacts import Artifacts
    from embedline.tasks.config import load_config
    from embedline.tasks.evaluation.beir import load_beir
    from embedline.tasks.evaluation.interface import embed_queries
    from embedline.tasks.evaluation.metrics import evaluate_run, jsonl_record_key
    from embedline.tasks.evaluation.stage import CORPUS_PREFIX, dataset_config
    from embedline.tasks.vectorsets.fusion import fuse, fuse_chunks, group_by_document
    from embedline.tasks.vectorsets.sparse import encoder_for
    from embedline.tasks.vectorsets.stores import open_store

    dataset = args.dataset.resolve()
    workdir = (args.workdir or ROOT / "data" / "eval-runs" / dataset.name).resolve()
    cfg = dataset_config(load_config(ROOT / "params.yaml"), dataset, workdir)
    art = Artifacts(workdir)
    store = open_store(cfg.qdrant, art.root)
    coll = cfg.qdrant.collection
    encoder = encoder_for(store.describe(coll))
    data = load_beir(dataset)
    queries = data.evaluable()
    keyf = jsonl_record_key(CORPUS_PREFIX)

    def key(h):  # type: ignore[no-untyped-def]
        return keyf(str(h.payload.get("source", "")))

    t0 = time.perf_counter()
    qids = list(queries)
    vecs = embed_queries(cfg.embed, [queries[q] for q in qids])
    lists = {}
    for qid, vec in zip(qids, vecs, strict=True):
        dense = store.search(coll, vec, k=args.depth)
        sparse = store.search_sparse(coll, encoder.query(queries[qid]), k=args.depth)
        lists[qid] = (dense, sparse)
    fetch_s = time.perf_counter() - t0

    def score(run: dict) -> dict:  # type: ignore[type-arg]
        m = evaluate_run(run, data.qrels, (10, 100))
        return {"ndcg@10": round(m["ndcg@10"], 4), "mrr@10": round(m["mrr@10"], 4), "recall@100": round(m["recall@100"], 4)}

    results: list[dict] = []  # type: ignore[type-arg]

    def add(name: str, run: dict, **kw: float) -> None:  # type: ignore[type-arg]
        results.append({"method": name, **kw, **score(run)})

    add("dense", {q: {d.doc: d.score for d in group_by_document(lists[q][0], key=key)} for q in qids})
    add("sparse", {q: {d.doc: d.score for d in group_by_document(lists[q][1], key=key)} for q in qids})
    for k in (2, 5, 10, 20, 40, 60, 100):
        for ws in (0.3, 0.5, 0.7, 1.0, 1.3, 1.6, 2.0, 3.0):
            params = {"dense": 1.0, "sparse": ws, "k": float(k)}
            run = {q: {d.doc: d.score for d in fuse(*lists[q], 100, params=params, key=key)} for q in qids}
            add("rrf_doc", run, k=k, w_sparse=ws)
            crun = {}
            for q in qids:
                docs = group_by_document(fuse_chunks(*lists[q], 10_000, params=params), key=key)
                crun[q] = {d.doc: d.score for d in docs}
            add("rrf_chunk", crun, k=k, w_sparse=ws)
    for alpha in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        run = {}
        for q in qids:
            dn, sn = _minmax(lists[q][0], key), _minmax(lists[q][1], key)
            run[q] = {d: (1 - alpha) * dn.get(d, 0.0) + alpha * sn.get(d, 0.0) for d in dn.keys() | sn.keys()}
        add("minmax", run, alpha=alpha)
    best = sorted(results, key=lambda r: -r["ndcg@10"])
    out = {"dataset": str(dataset), "queries": len(qids), "depth": args.depth, "fetch_seconds": round(fetch_s, 1),
           "best": best[:15], "all": results}
    res_dir = ROOT / "benchmarks" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / f"fusion_{dataset.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    for r in results[:2] + best[:15]:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
