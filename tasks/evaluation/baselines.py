"""Baselines scored in the same run as the dense vector set, on the same documents.

- :class:`BM25Retriever`: Okapi BM25 (``bm25s``, Lucene variant, k1 = 1.2, b = 0.75) over title +
  text, lowercase alphanumeric tokens minus a small English stop list, no stemming: the classic
  reference configuration (on Cranfield it gives nDCG@10 ≈ 0.355).
- :class:`WholeDocRetriever`: each document's full text embedded as one input with the same model
  and passage prompt (what peers do: the model truncates at its window), cosine search in numpy.
  Vectors go through the embedding cache, so re-runs and one-chunk documents cost nothing.

Their gap to the dense, chunked vector set shows what chunking and preprocessing buy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import numpy as np

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, EmbedParams
from embedline.tasks.evaluation.interface import (
    EvalDoc,
    RunDict,
    document_text,
    embed_queries,
    embed_texts,
)
from embedline.tasks.vectors import l2_normalize

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[0-9a-z]+")


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def bm25_tokens(text: str, stopwords: frozenset[str] = frozenset()) -> list[str]:
    """Lowercase alphanumeric tokens without stop words."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in stopwords]


def _top_k(scores: np.ndarray, ids: Sequence[str], k: int, *, positive_only: bool) -> dict[str, float]:
    k = min(k, scores.shape[0])
    if k <= 0:
        return {}
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.lexsort((idx, -scores[idx]))]
    return {ids[i]: float(scores[i]) for i in idx if not positive_only or scores[i] > 0}


class BM25Retriever:
    """BM25 over the documents' title + text (``bm25s`` sparse index, built once)."""

    name = "bm25"

    def __init__(self, docs: Sequence[EvalDoc], *, k1: float = 1.2, b: float = 0.75):
        import bm25s

        self.ids = [d.id for d in docs]
        self.stopwords = _stopwords()
        self.index = bm25s.BM25(k1=k1, b=b, method="lucene")
        corpus = [bm25_tokens(document_text(d.title, d.text), self.stopwords) for d in docs]
        if self.ids:
            self.index.index(corpus, show_progress=False)

    def search(self, queries: Mapping[str, str], k: int) -> RunDict:
        run: RunDict = {}
        for qid, text in queries.items():
            tokens = bm25_tokens(text, self.stopwords)
            if not self.ids or not tokens:
                run[qid] = {}
                continue
            scores = np.asarray(self.index.get_scores(tokens), dtype=np.float64)
            run[qid] = _top_k(scores, self.ids, k, positive_only=True)
        return run


def embed_passages_cached(cfg: Config, art: Artifacts, params: EmbedParams, texts: Sequence[str]) -> np.ndarray:
    """Passage vectors through the project's embedding cache (same namespace and text hashes as the
    embed stage, so a document whose whole text is one chunk costs nothing, and re-runs are free)."""
    if not cfg.embed.cache or not texts:
        return embed_texts(params, texts, params.passage_prompt)
    from embedline.tasks.embed.cached import embed_cached

    return embed_cached(params, texts, params.passage_prompt, art.resolve(cfg.embed.cache_path))


class WholeDocRetriever:
    """One vector per whole document (its full text, same model and passage prompt, truncated by
    the model at its window as peers do), exact cosine search in numpy."""

    name = "wholedoc"

    def __init__(self, docs: Sequence[EvalDoc], params: EmbedParams, cfg: Config, art: Artifacts):
        from embedline.tasks.normalize import EmbedTransform

        transform = EmbedTransform(cfg.preprocess)
        self.params = params
        self.cache = art.resolve(cfg.embed.cache_path) if cfg.embed.cache else None
        texts = [transform(d.text, d.language) for d in docs]
        keep = [i for i, t in enumerate(texts) if t.strip()]  # empty documents cannot be embedded
        self.ids = [docs[i].id for i in keep]
        self.matrix = l2_normalize(embed_passages_cached(cfg, art, params, [texts[i] for i in keep]))

    def search(self, queries: Mapping[str, str], k: int) -> RunDict:
        qids = list(queries)
        if not qids:
            return {}
        if not self.ids:
            return {q: {} for q in qids}
        q = l2_normalize(embed_queries(self.params, [queries[x] for x in qids], self.cache))
        scores = q @ self.matrix.T
        return {qid: _top_k(scores[i], self.ids, k, positive_only=False) for i, qid in enumerate(qids)}
