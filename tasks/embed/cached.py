"""Vectors for arbitrary texts through the embedding cache: evaluation queries, whole documents,
anything outside the embed stage that must not be paid for twice.

The key is the same as the embed stage's: (namespace, ``content_hash(text)``), where the namespace
covers everything that decides the vector (:func:`~embedline.tasks.embed.cache.namespace_for`),
including the prompt. Passage texts therefore share the stage's entries (a document whose whole
text is one chunk costs nothing) and query texts get their own namespace (the query prompt);
when both prompts are equal the model sees the same string, so sharing is exact. Each distinct
text is embedded once, uncached texts in the calls the embed stage would make (the provider's
request plan on the prompted texts: token-packed API requests, several local batches per call),
each committed as soon as it is back; when a call fails, its requests that succeeded are committed
too (they were paid for). A re-run with nothing new sends no request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedline.tasks.config import EmbedParams, stable_hash
from embedline.tasks.embed.cache import EmbeddingCache, namespace_for, namespace_spec
from embedline.tasks.embed.protocol import (
    EmbedError,
    paid_for,
    truncate_dims,
    validate_vectors,
    with_prompt,
)
from embedline.tasks.embed.registry import get_embedder, revision_for
from embedline.tasks.embed.requests import fixed_groups
from embedline.tasks.records import content_hash

if TYPE_CHECKING:
    from embedline.tasks.embed.query import QueryEncoder


LIGHT_BACKEND = "exported-graph"  # namespace marker of vectors made by query.QueryEncoder


def _embed(params: EmbedParams, texts: list[str], prompt: str) -> np.ndarray:
    emb = get_embedder(params)
    return validate_vectors(emb.embed(with_prompt(texts, prompt)), len(texts), None, emb.name)


def _light(params: EmbedParams) -> QueryEncoder | None:
    """The exported graph of the ingest model (within 1e-5 cosine of it, no torch import: query.py),
    unless the model is already loaded in this process (then it costs nothing to use it)."""
    from embedline.tasks.embed.query import light_encoder
    from embedline.tasks.embed.registry import peek_embedder

    return None if peek_embedder(params) is not None else light_encoder(params, bulk=True)


def _embed_light(fast: QueryEncoder, params: EmbedParams, texts: list[str], prompt: str) -> np.ndarray:
    vecs = truncate_dims(fast.encode(with_prompt(texts, prompt)), params.dimensions, params.normalize)
    return validate_vectors(vecs, len(texts), None, f"{LIGHT_BACKEND}:{params.model}")


def _groups(params: EmbedParams, texts: list[str], prompt: str, bs: int) -> list[list[int]]:
    """How the embed stage would cut ``texts`` into calls: the provider's plan on the prompted texts
    (API requests packed by tokens; OpenVINO and ONNX per text take several batches per call, since
    every call ends on a barrier), else ``bs`` texts per call."""
    from embedline.tasks.embed.registry import request_groups

    return request_groups(get_embedder(params), params, with_prompt(texts, prompt), bs)


def _fill(cache: EmbeddingCache, ns: str, todo: list[str], first: dict[str, str], groups: list[list[int]],
          embed: Callable[[list[str]], np.ndarray], got: dict[str, np.ndarray]) -> None:
    for group in groups:
        part = [todo[i] for i in group]
        try:
            vecs = embed([first[h] for h in part])
        except EmbedError as exc:  # the call's requests that succeeded before it failed: paid for, kept
            paid = paid_for(exc, None, "partial")
            if paid:
                cache.put_many(ns, zip([part[j] for j in paid[0]], paid[1], strict=True))
            raise
        cache.put_many(ns, zip(part, vecs, strict=True))
        got.update(zip(part, vecs, strict=True))


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
    spec = namespace_spec(params, revision, prompt)
    with EmbeddingCache(cache_path) as cache:
        cache.register(ns, spec)
        got = cache.get_many(ns, list(first), count=False)
        todo = [h for h in first if h not in got]
        fast = _light(params) if todo else None
        if fast is not None:
            # the graph's vectors get their own namespace: they are within 1e-5 cosine of the model's,
            # not bit-equal, and the embed stage must never read them back as its own (vectors.npy
            # stays a pure function of its inputs)
            light_spec = {**spec, "backend": f"{spec['backend']}+{LIGHT_BACKEND}"}
            light_ns = stable_hash(light_spec)[:32]
            cache.register(light_ns, light_spec)
            got.update(cache.get_many(light_ns, todo, count=False))
            todo = [h for h in todo if h not in got]
            _fill(cache, light_ns, todo, first, fixed_groups(len(todo), bs),
                  lambda t: _embed_light(fast, params, t, prompt), got)
        elif todo:
            groups = _groups(params, [first[h] for h in todo], prompt, bs)
            _fill(cache, ns, todo, first, groups, lambda t: _embed(params, t, prompt), got)
    return np.stack([got[h] for h in hashes]).astype(np.float32, copy=False)


def embed_queries_cached(params: EmbedParams, texts: Sequence[str], cache_path: str | Path | None) -> np.ndarray:
    """Query vectors (``embed.query_prompt``) through the cache: see :func:`embed_cached`."""
    return embed_cached(params, texts, params.query_prompt, cache_path)


__all__ = ["embed_cached", "embed_queries_cached"]
