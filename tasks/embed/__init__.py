"""Embedding: providers behind one protocol, token-budget batching, rate limiting, a content cache.

Public API (nothing heavy is imported here: models and clients load on first use)::

    get_embedder(params) -> Embedder          process-wide cached instance per EmbedParams
    PROVIDERS                                 registry: embed.provider -> factory(EmbedParams)
    run_embed(cfg, art, progress=None)        the embed stage (vectors.npy + manifest.json)
    plan_shards / embed_shard / finalize_embed   the same stage split for a fan-out runner
    fingerprint_for(cfg)                      vector-set fingerprint without loading the model
    embed_query(params, text)                 a search query vector (query prompt applied)
"""

from tasks.embed.protocol import (
    Embedder,
    EmbedError,
    EmbedInputError,
    EmbedResponseError,
    l2_normalize,
    truncate_dims,
    validate_vectors,
    with_prompt,
)
from tasks.embed.registry import PROVIDERS, clear_embedders, get_embedder

__all__ = [
    "PROVIDERS",
    "EmbedError",
    "EmbedInputError",
    "EmbedResponseError",
    "Embedder",
    "clear_embedders",
    "get_embedder",
    "l2_normalize",
    "truncate_dims",
    "validate_vectors",
    "with_prompt",
]
