"""Providers registry keyed by ``embed.provider`` and the process-wide embedder cache.

Factories import their provider module lazily, so importing :mod:`embedline.tasks.embed` never loads torch,
a model or an HTTP client. :func:`get_embedder` builds each configuration once per process, under a
lock, the first time it is asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from embedline.tasks.config import EmbedParams
from embedline.tasks.embed.protocol import Embedder


def _fake(params: EmbedParams) -> Embedder:
    from embedline.tasks.embed.providers.fake import FakeEmbedder

    return FakeEmbedder(params)


def _sentence_transformers(params: EmbedParams) -> Embedder:
    from embedline.tasks.embed.providers.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(params)


def _openai(params: EmbedParams) -> Embedder:
    from embedline.tasks.embed.providers.openai import OpenAIEmbedder

    return OpenAIEmbedder(params)


PROVIDERS: dict[str, Callable[[EmbedParams], Embedder]] = {
    "sentence-transformers": _sentence_transformers,
    "openai": _openai,
    "fake": _fake,
}


def _fake_revision(params: EmbedParams) -> str:
    from embedline.tasks.embed.providers.fake import revision_for

    return revision_for(params)


def _st_revision(params: EmbedParams) -> str:
    from embedline.tasks.embed.providers.sentence_transformers import revision_for

    return revision_for(params)


def _openai_revision(params: EmbedParams) -> str:
    from embedline.tasks.embed.providers.openai import revision_for

    return revision_for(params)


# How to name a model's exact weights WITHOUT building the embedder (no model load, no API key):
# the cache namespace and the fingerprint need it even when every vector is already cached.
REVISIONS: dict[str, Callable[[EmbedParams], str]] = {
    "sentence-transformers": _st_revision,
    "openai": _openai_revision,
    "fake": _fake_revision,
}


def revision_for(params: EmbedParams) -> str:
    """The model revision for ``params`` (hash of local weights, or model@endpoint for APIs)."""
    fn = REVISIONS.get(params.provider)
    return fn(params) if fn is not None else f"{params.provider}:{params.model}@{params.revision}"

# Params that do not change the embedder object (cache location, sharding) are not part of its key.
_NOT_EMBEDDER_FIELDS = {"cache", "cache_path", "shard_rows", "concurrency"}

_instances: dict[tuple[object, ...], Embedder] = {}
_lock = threading.Lock()


def embedder_key(params: EmbedParams) -> tuple[object, ...]:
    return tuple(
        (k, v) for k, v in sorted(params.model_dump().items()) if k not in _NOT_EMBEDDER_FIELDS
    )


def get_embedder(params: EmbedParams) -> Embedder:
    """The embedder for ``params``: built lazily once per process, then shared (thread-safe)."""
    key = embedder_key(params)
    inst = _instances.get(key)
    if inst is not None:
        return inst
    with _lock:
        inst = _instances.get(key)
        if inst is None:
            try:
                factory = PROVIDERS[params.provider]
            except KeyError:
                raise ValueError(
                    f"unknown embed.provider {params.provider!r}; valid: {', '.join(sorted(PROVIDERS))}"
                ) from None
            inst = factory(params)
            _instances[key] = inst
        return inst


def peek_embedder(params: EmbedParams) -> Embedder | None:
    """The cached embedder for ``params`` if one was built in this process (never builds one)."""
    return _instances.get(embedder_key(params))


def clear_embedders() -> None:
    """Forget cached embedders (tests; frees models)."""
    with _lock:
        _instances.clear()
