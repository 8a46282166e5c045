"""Retrieval methods behind one interface, so the same harness scores each of them.

A :class:`Retriever` answers a batch of queries with a document-level run ``{qid: {doc: score}}``.
:data:`RETRIEVERS` maps a method name to a factory taking an :class:`EvalContext`:

- ``dense``: the configured embedder + the query prompt, searched in a (named) Qdrant collection
  through :mod:`embedline.tasks.vectorsets.stores`; chunk hits are mapped to documents by max score per document;
- ``hybrid``: the same dense query plus the BM25 sparse query of the collection's own recipe, fused
  server-side by Qdrant (prefetch dense + prefetch sparse, reciprocal rank fusion); needs a
  collection built with ``qdrant.sparse=true``;
- ``bm25`` and ``wholedoc``: the baselines of :mod:`embedline.tasks.evaluation.baselines`, on the same
  documents (``documents.parquet``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from embedline.tasks.evaluation.baselines import BM25Retriever, WholeDocRetriever
from embedline.tasks.evaluation.interface import (
    EvalContext,
    EvalDoc,
    Retriever,
    RunDict,
    document_text,
    embed_queries,
    embed_texts,
)
from embedline.tasks.evaluation.metrics import docs_from_hits

if TYPE_CHECKING:
    from embedline.tasks.vectorsets.stores import Hit

__all__ = [
    "RETRIEVERS", "DenseRetriever", "EvalContext", "EvalDoc", "HybridRetriever", "Retriever",
    "RunDict", "document_text", "embed_queries", "embed_texts", "get_retriever",
]

CHUNK_HITS_FACTOR = 3  # chunk hits fetched per wanted document (several chunks share a document)


# ---- dense ---------------------------------------------------------------------------------------
class DenseRetriever:
    """Chunk search in a Qdrant collection, mapped to documents by max score."""

    name = "dense"

    def __init__(self, ctx: EvalContext, *, hits_factor: int = CHUNK_HITS_FACTOR):
        from embedline.tasks.vectorsets.stores import open_store

        self.ctx = ctx
        self.store = open_store(ctx.cfg.qdrant, ctx.art.root)
        self.hits_factor = hits_factor

    def search(self, queries: Mapping[str, str], k: int) -> RunDict:
        qids = list(queries)
        vecs = embed_queries(self.ctx.embed_params, [queries[q] for q in qids], self.ctx.cache_path)
        chunk_k = max(k * self.hits_factor, k)
        run: RunDict = {}
        for qid, vec in zip(qids, vecs, strict=True):
            hits = self.chunk_hits(queries[qid], vec, chunk_k)
            docs = docs_from_hits(((h.score, h.payload) for h in hits), self.ctx.key)
            run[qid] = dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:k])
        return run

    def chunk_hits(self, text: str, vec: np.ndarray, k: int) -> list[Hit]:
        return self.store.search(self.ctx.collection, vec, k=k)


class HybridRetriever(DenseRetriever):
    """Dense + BM25 sparse chunk search fused by RRF in Qdrant, mapped to documents by max score."""

    name = "hybrid"

    def __init__(self, ctx: EvalContext, *, hits_factor: int = CHUNK_HITS_FACTOR):
        from embedline.tasks.vectorsets.sparse import encoder_for
        from embedline.tasks.vectorsets.stores import CollectionNotFoundError

        super().__init__(ctx, hits_factor=hits_factor)
        spec = self.store.describe(ctx.collection)
        if spec is None:
            raise CollectionNotFoundError(ctx.collection)
        self.encoder = encoder_for(spec)  # SparseVectorMissingError for a dense-only collection

    def chunk_hits(self, text: str, vec: np.ndarray, k: int) -> list[Hit]:
        return self.store.search_hybrid(self.ctx.collection, vec, self.encoder.query(text), k=k)


def _dense(ctx: EvalContext) -> Retriever:
    return DenseRetriever(ctx)


def _hybrid(ctx: EvalContext) -> Retriever:
    return HybridRetriever(ctx)


def _bm25(ctx: EvalContext) -> Retriever:
    return BM25Retriever(ctx.documents())


def _wholedoc(ctx: EvalContext) -> Retriever:
    return WholeDocRetriever(ctx.documents(), ctx.embed_params, ctx.cfg, ctx.art)


RETRIEVERS: dict[str, Callable[[EvalContext], Retriever]] = {
    "dense": _dense,
    "bm25": _bm25,
    "wholedoc": _wholedoc,
    "hybrid": _hybrid,
}


def get_retriever(name: str, ctx: EvalContext) -> Retriever:
    try:
        factory = RETRIEVERS[name]
    except KeyError:
        raise ValueError(f"unknown retrieval method {name!r}; valid: {', '.join(RETRIEVERS)}") from None
    return factory(ctx)
