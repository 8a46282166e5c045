"""Search the served vector set: the alias ``qdrant.collection``, dense or hybrid.

:func:`search` embeds the query (query prompt applied) and asks the store; :func:`served` names the
collection and fingerprint behind the alias (what answered).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config
from embedline.tasks.vectorsets.base import VectorSetMismatchError
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


def _hybrid_search(store: VectorStore, spec: VectorSetSpec, alias: str, query: str,
                   dense: Callable[[], np.ndarray], k: int, filter: PayloadFilter | None) -> list[Hit]:
    from embedline.tasks.vectorsets.sparse import encoder_for

    sparse = encoder_for(spec).query(query)  # a dense-only set fails here, before the model loads
    return store.search_hybrid(alias, dense(), sparse, k=k, filter=filter)


SEARCH_MODES: dict[str, SearchFn] = {"dense": _dense_search, "hybrid": _hybrid_search}


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
    ``dense`` (vector search) or ``hybrid`` (dense + BM25 sparse fused by RRF in Qdrant; needs a
    vector set built with ``qdrant.sparse=true``, else :class:`SparseVectorMissingError`)."""
    from embedline.tasks.embed.auto import resolve_auto
    from embedline.tasks.vectorsets.lifecycle import store_for

    cfg = resolve_auto(cfg, art)  # embed.backend=auto: the recorded choice (calibrated at ingest)
    try:
        run = SEARCH_MODES[mode]
    except KeyError:
        raise ValueError(f"unknown search mode {mode!r}; valid: {', '.join(SEARCH_MODES)}") from None
    store = store_for(cfg, art)
    alias = cfg.qdrant.collection
    spec = store.describe(alias)
    if spec is None:
        raise StoreError(f"no live collection behind {alias!r}: run `embedline ingest` first")
    live = spec

    def dense() -> np.ndarray:
        from embedline.tasks.embed import embed_query

        vec = np.asarray(embed_query(cfg.embed, query), dtype=np.float32).reshape(-1)
        if vec.shape[0] != live.dims:
            raise VectorSetMismatchError(
                f"the query embedder gives {vec.shape[0]}-d vectors but {live.name!r} holds {live.dims}-d "
                f"(model {live.metadata.get('model')!r}): re-run the ingest for the configured model"
            )
        return vec

    return run(store, spec, alias, query, dense, k, filter)


def served(cfg: Config, art: Artifacts) -> tuple[str | None, str | None]:
    """(physical collection, fingerprint) behind the alias ``qdrant.collection``; (None, None) if none."""
    from embedline.tasks.vectorsets.lifecycle import store_for

    spec = store_for(cfg, art).describe(cfg.qdrant.collection)
    if spec is None:
        return None, None
    fp = spec.metadata.get("fingerprint")
    return spec.name, None if fp is None else str(fp)
