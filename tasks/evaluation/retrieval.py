"""Retrieval methods behind one interface, so the same harness scores each of them.

A :class:`Retriever` answers a batch of queries with a document-level run ``{qid: {doc: score}}``.
:data:`RETRIEVERS` maps a method name to a factory taking an :class:`EvalContext`:

- ``dense``: the configured embedder + the query prompt, searched in a (named) Qdrant collection
  through :mod:`embedline.tasks.vectorsets.stores`; chunk hits are mapped to documents by max score per document;
- ``hybrid``: the same dense query plus the BM25 sparse query of the collection's own recipe, each
  mapped to documents, fused by weighted RRF over document ranks (:mod:`embedline.tasks.vectorsets.fusion`);
  needs a collection built with ``qdrant.sparse=true``;
- ``bm25`` and ``wholedoc``: the baselines of :mod:`embedline.tasks.evaluation.baselines`, on the same
  documents (``documents.parquet``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
from embedline.tasks.vectorsets.fusion import deepen

if TYPE_CHECKING:
    from embedline.tasks.vectorsets.stores import Hit

__all__ = [
    "RETRIEVERS", "DenseRetriever", "EvalContext", "EvalDoc", "HybridRetriever", "Retriever",
    "RunDict", "document_text", "embed_queries", "embed_texts", "get_retriever",
]

CHUNK_HITS_FACTOR = 3  # chunk hits fetched per wanted document (several chunks share a document)
# the only payload keys a run needs (:func:`payload_sources`): full payloads (chunk text and
# metadata) were most of a search's cost during evaluation
SOURCE_KEYS = ("source", "sources")


# ---- dense ---------------------------------------------------------------------------------------
class DenseRetriever:
    """Chunk search in a Qdrant collection, mapped to documents by max score."""

    name = "dense"

    def __init__(self, ctx: EvalContext, *, hits_factor: int = CHUNK_HITS_FACTOR):
        from embedline.tasks.vectorsets.stores import open_store

        self.ctx = ctx
        self.store = open_store(ctx.cfg.qdrant, ctx.art.root)
        self.hits_factor = hits_factor
        self._sources: dict[str, Mapping[str, object]] = {}  # point id -> its source keys

    def search(self, queries: Mapping[str, str], k: int) -> RunDict:
        qids = list(queries)
        vecs = embed_queries(self.ctx.embed_params, [queries[q] for q in qids], self.ctx.cache_path)
        chunk_k = max(k * self.hits_factor, k)
        run: RunDict = {}
        for qid, vec in zip(qids, vecs, strict=True):
            hits = deepen(lambda d, q=qid, v=vec: self.chunk_hits(queries[q], v, d), self.names(k), chunk_k)
            docs = docs_from_hits(((h.score, h.payload) for h in hits), self.ctx.key)
            run[qid] = dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:k])
        return run

    def names(self, k: int) -> Callable[[Sequence[Hit]], bool]:
        """Whether chunk hits name ``k`` documents (the depth of every method's run)."""
        return lambda hits: len(docs_from_hits(((h.score, h.payload) for h in hits), self.ctx.key)) >= k

    def chunk_hits(self, text: str, vec: np.ndarray, k: int) -> list[Hit]:
        return self.with_sources(self.store.search(self.ctx.collection, vec, k=k, with_payload=False))

    def with_sources(self, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` (searched without payloads) with their source keys, each point's read from the
        store once per run: every query of a set mostly hits the same chunks, and payloads were
        most of a search's cost."""
        from embedline.tasks.vectorsets.base import Hit

        missing = list(dict.fromkeys(h.id for h in hits if h.id not in self._sources))
        for rec in self.store.retrieve(self.ctx.collection, missing) if missing else ():
            self._sources[rec.id] = {k: rec.payload[k] for k in SOURCE_KEYS if k in (rec.payload or {})}
        return [Hit(h.id, h.score, self._sources.get(h.id, {})) for h in hits]


class HybridRetriever(DenseRetriever):
    """Dense and BM25 sparse chunk searches, each mapped to documents by max score, fused by
    weighted RRF over the document ranks (:func:`embedline.tasks.vectorsets.fusion.fuse_rankings`,
    the same fusion ``embedline search --hybrid`` uses)."""

    name = "hybrid"

    def __init__(self, ctx: EvalContext, *, hits_factor: int = CHUNK_HITS_FACTOR):
        from embedline.tasks.vectorsets.sparse import encoder_for
        from embedline.tasks.vectorsets.stores import CollectionNotFoundError

        super().__init__(ctx, hits_factor=hits_factor)
        spec = self.store.describe(ctx.collection)
        if spec is None:
            raise CollectionNotFoundError(ctx.collection)
        self.encoder = encoder_for(spec)  # SparseVectorMissingError for a dense-only collection

    def search(self, queries: Mapping[str, str], k: int) -> RunDict:
        from embedline.tasks.vectorsets.fusion import CANDIDATES_FACTOR, fuse_rankings

        qids = list(queries)
        vecs = embed_queries(self.ctx.embed_params, [queries[q] for q in qids], self.ctx.cache_path)
        depth = max(k * CANDIDATES_FACTOR, k)
        coll = self.ctx.collection
        run: RunDict = {}
        enough = self.names(k)
        for qid, vec in zip(qids, vecs, strict=True):
            sq = self.encoder.query(queries[qid])
            dense = deepen(lambda d, v=vec: self.with_sources(self.store.search(coll, v, k=d, with_payload=False)),
                           enough, depth)
            sparse = deepen(
                lambda d, s=sq: self.with_sources(self.store.search_sparse(coll, s, k=d, with_payload=False)),
                enough, depth)
            d = docs_from_hits(((h.score, h.payload) for h in dense), self.ctx.key)
            s = docs_from_hits(((h.score, h.payload) for h in sparse), self.ctx.key)
            run[qid] = fuse_rankings(d, s, k)
        return run


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
