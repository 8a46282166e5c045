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

    @property
    def cache_path(self) -> Path | None:
        """The embedding cache queries go through (None when ``embed.cache`` is off)."""
        return self.art.resolve(self.cfg.embed.cache_path) if self.cfg.embed.cache else None

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


def embed_queries(params: EmbedParams, texts: Sequence[str], cache: Path | None = None) -> np.ndarray:
    """Query vectors with ``embed.query_prompt``, batched; through the embedding cache file
    ``cache`` when given (a re-run of an evaluation sends no request)."""
    if cache is None or not texts:
        return embed_texts(params, texts, params.query_prompt)
    from embedline.tasks.embed.cached import embed_queries_cached

    return embed_queries_cached(params, texts, cache)

