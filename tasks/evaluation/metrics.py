"""Retrieval metrics (trec_eval conventions) and the chunk -> document mapping.

Conventions (those of trec_eval / pytrec_eval, which BEIR reports):

- a run is {query id: {doc id: score}}; it is ranked by score descending, ties broken by doc id
  ascending (deterministic);
- a document is relevant when its qrels grade is > 0; unjudged documents count as grade 0;
- nDCG@k uses linear graded gains ``grade / log2(rank + 1)`` (rank from 1), normalised by the ideal
  ordering of all judged documents of the query;
- recall@k = relevant documents in the top k / all relevant documents of the query;
- MRR@k = 1 / rank of the first relevant document within the top k (0 if none);
- means are taken over the queries that have at least one relevant judgement (others cannot be
  scored); a query missing from the run scores 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Run = Mapping[str, Mapping[str, float]]
QrelsLike = Mapping[str, Mapping[str, int]]
DocKey = Callable[[str], str | None]


def rank(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Doc ids by score descending (ties: doc id ascending), cut at ``k``."""
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [d for d, _ in (ranked if k is None else ranked[:k])]


def dcg(gains: Iterable[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    gains = [max(judged.get(d, 0), 0) for d in ranked[:k]]
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = dcg(ideal)
    return dcg(gains) / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if judged.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def scored_queries(qrels: QrelsLike) -> list[str]:
    """Query ids that have at least one relevant judgement, sorted."""
    return sorted(q for q, j in qrels.items() if any(g > 0 for g in j.values()))


def evaluate_run(
    run: Run,
    qrels: QrelsLike,
    ks: Iterable[int] = (1, 5, 10, 100),
    *,
    ndcg_k: int = 10,
    mrr_k: int = 10,
) -> dict[str, float]:
    """Mean nDCG@ndcg_k, MRR@mrr_k and recall@k (each k) over the scorable queries.

    Returns ``{"ndcg@10": .., "mrr@10": .., "recall@1": .., ..., "queries": n}``.
    """
    ks = sorted(set(ks))
    qids = scored_queries(qrels)
    depth = max([ndcg_k, mrr_k, *ks])
    sums: dict[str, float] = {f"ndcg@{ndcg_k}": 0.0, f"mrr@{mrr_k}": 0.0}
    sums.update({f"recall@{k}": 0.0 for k in ks})
    for q in qids:
        ranked = rank(run.get(q, {}), depth)
        judged = qrels[q]
        sums[f"ndcg@{ndcg_k}"] += ndcg_at_k(ranked, judged, ndcg_k)
        sums[f"mrr@{mrr_k}"] += mrr_at_k(ranked, judged, mrr_k)
        for k in ks:
            sums[f"recall@{k}"] += recall_at_k(ranked, judged, k)
    n = len(qids)
    out = {name: (total / n if n else 0.0) for name, total in sums.items()}
    out["queries"] = float(n)
    return out


def recall_curve(run: Run, qrels: QrelsLike, max_k: int) -> list[float]:
    """Mean recall@k for k = 1..max_k (element k-1), over the scorable queries."""
    qids = scored_queries(qrels)
    acc = np.zeros(max_k, dtype=np.float64)
    for q in qids:
        judged = qrels[q]
        relevant = {d for d, g in judged.items() if g > 0}
        hits = np.zeros(max_k, dtype=np.float64)
        for i, d in enumerate(rank(run.get(q, {}), max_k)):
            hits[i] = d in relevant
        acc += np.cumsum(hits) / len(relevant)
    return (acc / len(qids) if qids else acc).tolist()


# ---- chunks -> documents -------------------------------------------------------------------------
def payload_sources(payload: Mapping[str, Any]) -> list[str]:
    """Every document a point stands for: ``source`` plus each entry of ``sources`` (a chunk text
    stored once for all documents holding it; near-duplicates linked onto a representative).
    Entries of ``sources`` may be strings or ``{"source": ...}`` records."""
    out: list[str] = []
    src = payload.get("source")
    if src:
        out.append(str(src))
    extra = payload.get("sources") or ()
    if isinstance(extra, str) and extra.lstrip().startswith("["):
        extra = json.loads(extra)  # stored as a JSON string
    if isinstance(extra, str | Mapping):
        extra = (extra,)
    for item in extra:
        s = item.get("source") if isinstance(item, Mapping) else item
        if s:
            out.append(str(s))
    return list(dict.fromkeys(out))


def docs_from_hits(
    hits: Iterable[tuple[float, Mapping[str, Any]]],
    key: DocKey | None = None,
) -> dict[str, float]:
    """Map chunk hits ``(score, payload)`` to documents by max score per document.

    ``key`` maps a payload source to the evaluation's document id (None drops it); identity by
    default.
    """
    docs: dict[str, float] = {}
    for score, payload in hits:
        for src in payload_sources(payload):
            d = key(src) if key is not None else src
            if d is None:
                continue
            if d not in docs or score > docs[d]:
                docs[d] = float(score)
    return docs


def jsonl_record_key(prefix: str = "corpus.jsonl#") -> DocKey:
    """A key that maps ``corpus.jsonl#<_id>`` sources back to the BEIR corpus id."""

    def key(source: str) -> str | None:
        return source[len(prefix) :] if source.startswith(prefix) else None

    return key
