"""Embedding: providers behind one protocol, token-budget batching, rate limiting, a content cache.

Public API (nothing heavy is imported here: models and clients load on first use)::

    get_embedder(params) -> Embedder          process-wide cached instance per EmbedParams
    PROVIDERS                                 embed.provider -> ProviderSpec (the table: tasks/plugins.py)
    provider_spec(name)                       a provider's declaration (factory, revision, tokenizer, capabilities)
    run_embed(cfg, art, progress=None)        the embed stage (vectors/ shards + manifest.json)
    plan_shards / embed_shard / finalize_embed   the same stage split for a fan-out runner
    fingerprint_for(cfg)                      vector-set fingerprint without loading the model
    embed_query(params, text)                 a search query vector (query prompt applied)
    plan_embed(cfg, art)                      texts/tokens still to embed (for `embedline plan`)

Choosing a local backend (``embed.backend`` + ``embed.precision``; both are part of the vector-set
fingerprint, so switching builds a new vector set instead of mixing spaces):

    torch    fp32   reference (sentence-transformers)
    onnx     fp32   same vectors (cosine 1.0); ~1.0-1.5x torch here (AVX2-only EPYC), ~1.8x on AVX-512
    onnx     int8   fastest here: ~1.4-2.1x torch, mean cosine 0.992, min ~0.98 (per-channel weights)
    openvino fp32   same vectors; ~1-1.2x here; it picks bf16 itself (~3.6x) only with AVX512-BF16/AMX
    openvino int8   compiles the ONNX int8 graph: slower than openvino fp32 here (not recommended)

Exports happen once per model into ``embed.models_dir`` (``data/models``, git-ignored). Measured by
``benchmarks/bench_embed.py`` (results in ``benchmarks/results/embed.json``); FACTS.md's larger
ratios were taken on a CPU with AVX-512 BF16.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers; at run time each loads on first use (__getattr__)
    from embedline.tasks.embed.protocol import (
        Capability,
        Embedder,
        EmbedError,
        EmbedInputError,
        EmbedResponseError,
        EmbedTransientError,
        ProviderSpec,
        RequestPlanner,
        l2_normalize,
        truncate_dims,
        validate_vectors,
        with_prompt,
    )
    from embedline.tasks.embed.registry import (
        PROVIDERS,
        clear_embedders,
        get_embedder,
        peek_embedder,
        provider_spec,
        revision_for,
    )
    from embedline.tasks.embed.stage import (
        Shard,
        embed_query,
        embed_shard,
        finalize_embed,
        fingerprint_for,
        plan_embed,
        plan_shards,
        run_embed,
    )

# name -> module: importing the package stays cheap (a search imports neither the stage, pyarrow nor
# tenacity); each name's module is imported when the name is first used
_LAZY = {
    "Capability": "embedline.tasks.embed.protocol",
    "Embedder": "embedline.tasks.embed.protocol",
    "EmbedError": "embedline.tasks.embed.protocol",
    "EmbedInputError": "embedline.tasks.embed.protocol",
    "EmbedResponseError": "embedline.tasks.embed.protocol",
    "EmbedTransientError": "embedline.tasks.embed.protocol",
    "ProviderSpec": "embedline.tasks.embed.protocol",
    "RequestPlanner": "embedline.tasks.embed.protocol",
    "l2_normalize": "embedline.tasks.embed.protocol",
    "truncate_dims": "embedline.tasks.embed.protocol",
    "validate_vectors": "embedline.tasks.embed.protocol",
    "with_prompt": "embedline.tasks.embed.protocol",
    "PROVIDERS": "embedline.tasks.embed.registry",
    "clear_embedders": "embedline.tasks.embed.registry",
    "get_embedder": "embedline.tasks.embed.registry",
    "peek_embedder": "embedline.tasks.embed.registry",
    "provider_spec": "embedline.tasks.embed.registry",
    "revision_for": "embedline.tasks.embed.registry",
    "Shard": "embedline.tasks.embed.stage",
    "embed_query": "embedline.tasks.embed.query",
    "embed_shard": "embedline.tasks.embed.stage",
    "finalize_embed": "embedline.tasks.embed.stage",
    "fingerprint_for": "embedline.tasks.embed.stage",
    "plan_embed": "embedline.tasks.embed.stage",
    "plan_shards": "embedline.tasks.embed.stage",
    "run_embed": "embedline.tasks.embed.stage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "PROVIDERS",
    "Capability",
    "EmbedError",
    "EmbedInputError",
    "EmbedResponseError",
    "EmbedTransientError",
    "Embedder",
    "ProviderSpec",
    "RequestPlanner",
    "Shard",
    "clear_embedders",
    "embed_query",
    "embed_shard",
    "finalize_embed",
    "fingerprint_for",
    "get_embedder",
    "l2_normalize",
    "peek_embedder",
    "plan_embed",
    "plan_shards",
    "provider_spec",
    "revision_for",
    "run_embed",
    "truncate_dims",
    "validate_vectors",
    "with_prompt",
]
