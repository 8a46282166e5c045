"""Search the served vector set: the alias ``qdrant.collection``, dense or hybrid.

:func:`search` embeds the query (query prompt applied) and asks the store; :func:`served` names the
collection and fingerprint behind the alias (what answered).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.vectorsets.base import VectorSetMismatchError
from embedline.tasks.vectorsets.fusion import DocHit
from embedline.tasks.vectorsets.stores import (
    Hit,
    PayloadFilter,
    StoreError,
    VectorSetSpec,
    VectorStore,
)

SearchMode = Literal["dense", "hybrid"]
# (store, spec of the live collection, alias, query text, query vector (lazy), k, filter) -> hits
SearchFn = Callable[[VectorStore, VectorSetSpec, str, str, Callable[[], np.ndarray], int, "PayloadFilter | None"],
                    list[Hit]]


def _dense_search(store: VectorStore, spec: VectorSetSpec, alias: str, query: str,
                  dense: Callable[[], np.ndarray], k: int, filter: PayloadFilter | None) -> list[Hit]:
    return store.search(alias, dense(), k=k, filter=filter)


def _hybrid_lists(store: VectorStore, spec: VectorSetSpec, alias: str, query: str,
                  dense: Callable[[], np.ndarray], depth: int,
                  filter: PayloadFilter | None, documents: int = 0) -> tuple[list[Hit], list[Hit]]:
    """The dense and the BM25 sparse chunk lists that hybrid search fuses; with ``documents``, each
    list is deepened until it names that many documents (or holds the whole set)."""
    from embedline.tasks.vectorsets.fusion import deepen, group_by_document
    from embedline.tasks.vectorsets.sparse import encoder_for

    sparse = encoder_for(spec).query(query)  # a dense-only set fails here, before the model loads

    def enough(hits: Sequence[Hit]) -> bool:
        return len(group_by_document(hits)) >= documents

    vec = dense()
    return (list(deepen(lambda d: store.search(alias, vec, k=d, filter=filter), enough, depth)),
            list(deepen(lambda d: store.search_sparse(alias, sparse, k=d, filter=filter), enough, depth)))


def _hybrid_search(store: VectorStore, spec: VectorSetSpec, alias: str, query: str,
                   dense: Callable[[], np.ndarray], k: int, filter: PayloadFilter | None) -> list[Hit]:
    """Chunks by weighted RRF of their dense and sparse ranks (:func:`fusion.fuse_chunks`)."""
    from embedline.tasks.vectorsets.fusion import CANDIDATES_FACTOR, fuse_chunks

    lists = _hybrid_lists(store, spec, alias, query, dense, k * CANDIDATES_FACTOR, filter)
    return fuse_chunks(*lists, k)


SEARCH_MODES: dict[str, SearchFn] = {"dense": _dense_search, "hybrid": _hybrid_search}


@dataclass(frozen=True)
class DocumentResults:
    """Grouped search results: the live physical collection, its fingerprint, best chunk per document."""

    collection: str
    fingerprint: str
    documents: list[DocHit]


def search_documents(
    cfg: Config, art: Artifacts, query: str, k: int = 10, filter: PayloadFilter | None = None,
    *, mode: SearchMode = "dense",
) -> DocumentResults:
    """Like :func:`search`, grouped by document (best chunk per document, client-side: Qdrant Edge
    has no grouping API); ``hybrid`` fuses the dense and sparse *document* ranks by weighted RRF."""
    from embedline.tasks.vectorsets.fusion import CANDIDATES_FACTOR, deepen, fuse, group_by_document

    depth = k * CANDIDATES_FACTOR
    store, spec, alias, dense = _search_setup(cfg, art, query, mode)
    if mode == "hybrid":
        docs = fuse(*_hybrid_lists(store, spec, alias, query, dense, depth, filter, documents=k), k)
    else:
        hits = deepen(lambda d: _dense_search(store, spec, alias, query, dense, d, filter),
                      lambda h: len(group_by_document(h)) >= k, depth)
        docs = group_by_document(hits, k)
    return DocumentResults(spec.name, str(spec.metadata.get("fingerprint", "")), docs)


def search(
    cfg: Config,
    art: Artifacts,
    query: str,
    k: int = 10,
    filter: PayloadFilter | None = None,
    *,
    mode: SearchMode = "dense",
) -> list[Hit]:
    """Embed ``query`` (query prompt applied) and search the live alias ``qdrant.collection``:
    ``dense`` (vector search) or ``hybrid`` (dense + BM25 sparse, fused by weighted RRF; needs a
    vector set built with ``qdrant.sparse=true``, else :class:`SparseVectorMissingError`)."""
    run = SEARCH_MODES.get(mode)
    if run is None:
        raise ValueError(f"unknown search mode {mode!r}; valid: {', '.join(SEARCH_MODES)}")
    store, spec, alias, dense = _search_setup(cfg, art, query, mode)
    return run(store, spec, alias, query, dense, k, filter)


def _search_setup(
    cfg: Config, art: Artifacts, query: str, mode: str
) -> tuple[VectorStore, VectorSetSpec, str, Callable[[], np.ndarray]]:
    """The store, the live collection's spec, the alias and a lazy query embedder."""
    from embedline.tasks.embed.auto import resolve_auto
    from embedline.tasks.vectorsets.lifecycle import store_for

    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; valid: {', '.join(SEARCH_MODES)}")
    cfg = resolve_auto(cfg, art)  # embed.backend=auto: the recorded choice (calibrated at ingest)
    store = store_for(cfg, art)
    alias = cfg.qdrant.collection
    spec = store.describe(alias)
    if spec is None:
        raise StoreError(f"no live collection behind {alias!r}: run `embedline ingest` first")
    live = spec

    @functools.cache  # embedded once, however often a deepened search asks again
    def dense() -> np.ndarray:
        from embedline.tasks.embed import embed_query

        vec = np.asarray(embed_query(cfg.embed, query), dtype=np.float32).reshape(-1)
        if vec.shape[0] != live.dims:
            raise VectorSetMismatchError(
                f"the query embedder gives {vec.shape[0]}-d vectors but {live.name!r} holds {live.dims}-d "
                f"(model {live.metadata.get('model')!r}): re-run the ingest for the configured model"
            )
        return vec

    return store, spec, alias, dense


def served(cfg: Config, art: Artifacts) -> tuple[str | None, str | None]:
    """(physical collection, fingerprint) behind the alias ``qdrant.collection``; (None, None) if none."""
    from embedline.tasks.vectorsets.lifecycle import store_for

    spec = store_for(cfg, art).describe(cfg.qdrant.collection)
    if spec is None:
        return None, None
    fp = spec.metadata.get("fingerprint")
    return spec.name, None if fp is None else str(fp)
