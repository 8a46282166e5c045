"""Vectors for arbitrary texts through the embedding cache: evaluation queries, whole documents,
anything outside the embed stage that must not be paid for twice.

The key is the same as the embed stage's: (namespace, ``content_hash(text)``), where the namespace
covers everything that decides the vector (:func:`~embedline.tasks.embed.cache.namespace_for`),
including the prompt. Passage texts therefore share the stage's entries (a document whose whole
text is one chunk costs nothing) and query texts get their own namespace (the query prompt);
when both prompts are equal the model sees the same string, so sharing is exact. Each distinct
text is embedded once, uncached texts in ``embed.batch_size`` batches, each committed as soon as it
is back (a kill loses at most one batch). A re-run with nothing new sends no request.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed.cache import EmbeddingCache, namespace_for, namespace_spec
from embedline.tasks.embed.protocol import validate_vectors, with_prompt
from embedline.tasks.embed.registry import get_embedder, revision_for
from embedline.tasks.records import content_hash


def _embed(params: EmbedParams, texts: list[str], prompt: str) -> np.ndarray:
    emb = get_embedder(params)
    return validate_vectors(emb.embed(with_prompt(texts, prompt)), len(texts), None, emb.name)


def embed_cached(
    params: EmbedParams, texts: Sequence[str], prompt: str, cache_path: str | Path | None
) -> np.ndarray:
    """Vectors for ``texts`` with ``prompt`` prepended, through the cache file ``cache_path``
    (``None``: no cache, everything is embedded). Rows follow ``texts``; float32."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    bs = max(1, params.batch_size)
    if cache_path is None:
        parts = [_embed(params, list(texts[i : i + bs]), prompt) for i in range(0, len(texts), bs)]
        return np.concatenate(parts).astype(np.float32, copy=False)
    revision = revision_for(params)
    ns = namespace_for(params, revision, prompt)
    hashes = [content_hash(t) for t in texts]
    first: dict[str, str] = {}
    for h, t in zip(hashes, texts, strict=True):
        first.setdefault(h, t)
    with EmbeddingCache(cache_path) as cache:
        cache.register(ns, namespace_spec(params, revision, prompt))
        got = cache.get_many(ns, list(first), count=False)
        todo = [h for h in first if h not in got]
        for i in range(0, len(todo), bs):
            part = todo[i : i + bs]
            vecs = _embed(params, [first[h] for h in part], prompt)
            cache.put_many(ns, zip(part, vecs, strict=True))
            got.update(zip(part, vecs, strict=True))
    return np.stack([got[h] for h in hashes]).astype(np.float32, copy=False)


def embed_queries_cached(params: EmbedParams, texts: Sequence[str], cache_path: str | Path | None) -> np.ndarray:
    """Query vectors (``embed.query_prompt``) through the cache: see :func:`embed_cached`."""
    return embed_cached(params, texts, params.query_prompt, cache_path)


__all__ = ["embed_cached", "embed_queries_cached"]
