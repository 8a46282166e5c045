"""Retrieval methods behind one interface, so the same harness scores each of them.

A :class:`Retriever` answers a batch of queries with a document-level run ``{qid: {doc: score}}``.
:data:`RETRIEVERS` maps a method name to a factory taking an :class:`EvalContext`:

- ``dense``: the configured embedder + the query prompt, searched in a (named) Qdrant collection
  through :mod:`tasks.store`; chunk hits are mapped to documents by max score per document;
- ``hybrid``: the same dense query plus the BM25 sparse query of the collection's own recipe, fused
  server-side by Qdrant (prefetch dense + prefetch sparse, reciprocal rank fusion); needs a
  collection built with ``qdrant.sparse=true``;
- ``bm25`` and ``wholedoc``: the baselines of :mod:`tasks.evaluation.baselines`, on the same
  documents (``documents.parquet``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

import numpy as np

from tasks.artifacts import Artifacts
from tasks.config import Config, EmbedParams
from tasks.evaluation.metrics import DocKey, docs_from_hits
from tasks.records import Document, iter_records

if TYPE_CHECKING:
    from tasks.store import Hit

log = logging.getLogger(__name__)

RunDict = dict[str, dict[str, float]]
CHUNK_HITS_FACTOR = 3  # chunk hits fetched per wanted document (several chunks share a document)


class EvalDoc(NamedTuple):
    id: str  # evaluation doc id (the qrels corpus-id)
    title: str
    text: str  # display text (as preprocess wrote it)
    language: str | None  # source-code language, if any


@runtime_checkable
class Retriever(Protocol):
    name: str

    def search(self, queries: Mapping[str, str], k: int) -> RunDict:
        """Top-``k`` documents per query: {query id: {doc id: score}}."""
        ...


@dataclass
class EvalContext:
    """What every retriever may need; documents and the store are loaded lazily, once."""

    cfg: Config
    art: Artifacts
    collection: str  # alias or physical collection for dense search
    key: DocKey | None = None  # payload/document source -> evaluation doc id (identity if None)
    query_embed: EmbedParams | None = None  # embed params of the collection (default cfg.embed)
    _docs: list[EvalDoc] | None = field(default=None, repr=False)

    @property
    def embed_params(self) -> EmbedParams:
        return self.query_embed or self.cfg.embed

    def doc_key(self, source: str) -> str | None:
        return self.key(source) if self.key is not None else source

    def documents(self) -> list[EvalDoc]:
        """Every preprocessed document (documents.parquet), in file order, under its eval id."""
        if self._docs is None:
            if not self.art.documents.exists():
                raise FileNotFoundError(
                    f"{self.art.documents} not found: run the preprocess stage before evaluating"
                )
            docs: list[EvalDoc] = []
            for d in iter_records(self.art.documents, Document):
                k = self.doc_key(d.source)
                if k is not None:
                    docs.append(EvalDoc(k, d.title, d.text, d.metadata.get("language")))
            self._docs = docs
        return self._docs


def document_text(title: str, text: str) -> str:
    """A document's searchable text for the baselines: title + text, as BEIR concatenates them."""
    t = title.strip()
    return f"{t}\n\n{text}" if t else text


# ---- embedding helpers ---------------------------------------------------------------------------
def embed_texts(params: EmbedParams, texts: Sequence[str], prompt: str) -> np.ndarray:
    """Vectors for ``texts`` (prompt prepended) in ``embed.batch_size`` batches, as the embedder
    returns them (its dimensions and normalisation applied)."""
    from tasks.embed import get_embedder, with_prompt

    embedder = get_embedder(params)
    if not texts:
        return np.zeros((0, embedder.dims), dtype=np.float32)
    bs = max(1, params.batch_size)
    parts = [embedder.embed(with_prompt(list(texts[i : i + bs]), prompt)) for i in range(0, len(texts), bs)]
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


def embed_queries(params: EmbedParams, texts: Sequence[str]) -> np.ndarray:
    """Query vectors with ``embed.query_prompt``: :func:`tasks.embed.embed_query`, batched."""
    return embed_texts(params, texts, params.query_prompt)


# ---- dense ---------------------------------------------------------------------------------------
class DenseRetriever:
    """Chunk search in a Qdrant collection, mapped to documents by max score."""

    name = "dense"

    def __init__(self, ctx: EvalContext, *, hits_factor: int = CHUNK_HITS_FACTOR):
        from tasks.store import open_store

        self.ctx = ctx
        self.store = open_store(ctx.cfg.qdrant, ctx.art.root)
        self.hits_factor = hits_factor

    def search(self, queries: Mapping[str, str], k: int) -> RunDict:
        qids = list(queries)
        vecs = embed_queries(self.ctx.embed_params, [queries[q] for q in qids])
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
        from tasks.store import CollectionNotFoundError
        from tasks.store.sparse import encoder_for

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
    from tasks.evaluation.baselines import BM25Retriever

    return BM25Retriever(ctx.documents())


def _wholedoc(ctx: EvalContext) -> Retriever:
    from tasks.evaluation.baselines import WholeDocRetriever

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
