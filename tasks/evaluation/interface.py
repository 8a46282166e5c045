"""Evaluation's interface: the :class:`Retriever` protocol, the run type, the context every retriever
gets, and the embedding helpers the retrievers share. Retrievers (:mod:`.retrieval`, :mod:`.baselines`)
import this module; it imports none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, EmbedParams
from embedline.tasks.evaluation.metrics import DocKey
from embedline.tasks.records import Document, iter_records

log = logging.getLogger(__name__)

RunDict = dict[str, dict[str, float]]


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
    from embedline.tasks.embed import get_embedder, with_prompt

    embedder = get_embedder(params)
    if not texts:
        return np.zeros((0, embedder.dims), dtype=np.float32)
    bs = max(1, params.batch_size)
    parts = [embedder.embed(with_prompt(list(texts[i : i + bs]), prompt)) for i in range(0, len(texts), bs)]
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


def embed_queries(params: EmbedParams, texts: Sequence[str], cache_file: Path | None = None) -> np.ndarray:
    """Query vectors with ``embed.query_prompt``: :func:`embedline.tasks.embed.embed_query`, batched.

    With ``cache_file`` (the project's embedding cache) they go through the cache, so a re-run pays
    for no query and loads no model (issue 14 row 16). The namespace is the passage namespace of
    ``params`` with the query prompt in place of the passage prompt: equal prompts give equal
    vectors, different prompts different namespaces."""
    if cache_file is None or not texts:
        return embed_texts(params, texts, params.query_prompt)
    from embedline.tasks.embed.cache import EmbeddingCache, namespace_for, namespace_spec
    from embedline.tasks.embed.registry import revision_for
    from embedline.tasks.records import content_hash

    as_passage = params.model_copy(update={"passage_prompt": params.query_prompt})
    revision = revision_for(params)
    ns = namespace_for(as_passage, revision)
    hashes = [content_hash(t) for t in texts]
    first = dict(zip(hashes, texts, strict=True))
    with EmbeddingCache(cache_file) as cache:
        cache.register(ns, namespace_spec(as_passage, revision))
        got = cache.get_many(ns, list(first), count=False)
        todo = [h for h in first if h not in got]
        if todo:
            fresh = embed_texts(params, [first[h] for h in todo], params.query_prompt)
            cache.put_many(ns, zip(todo, fresh, strict=True))
            got.update(zip(todo, fresh, strict=True))
    return np.stack([got[h] for h in hashes]).astype(np.float32, copy=False)


def query_cache_file(cfg: Config, art: Artifacts) -> Path | None:
    """The embedding cache file for evaluation queries (None when ``embed.cache`` is off)."""
    return art.resolve(cfg.embed.cache_path) if cfg.embed.cache else None
