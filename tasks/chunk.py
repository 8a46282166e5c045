"""Stage 2, chunk: documents -> chunks that fit the embedding model's window, never truncated.

``run_chunk(cfg, art)`` streams ``art.documents``, splits each document with the chunker chosen
by ``chunk.strategy`` (see :mod:`embedline.tasks.chunkers`) and streams the chunks to ``art.chunks``.

Token counts come from the embedding model's own tokenizer (:func:`embedline.tasks.tokenize.load_token_counter`).
The budget for a chunk's embed text is::

    min(chunk.max_tokens, model window) - special tokens ([CLS]/[SEP]) - tokens of embed.passage_prompt

and every chunk is measured on its final embed text (after the per-chunk transform of
:class:`embedline.tasks.normalize.EmbedTransform`: lowercasing, lemmatising or stemming can change the
count), so the model never has to truncate.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from embedline.tasks import chunkers
from embedline.tasks.artifacts import Artifacts
from embedline.tasks.chunkers import Chunker, TokenBudget
from embedline.tasks.config import ChunkParams, Config, ConfigError, EmbedParams, PreprocessParams
from embedline.tasks.normalize import EmbedTransform
from embedline.tasks.records import Chunk, Document, ParquetSink, iter_records
from embedline.tasks.tokenize import TokenCounter, load_token_counter

log = logging.getLogger(__name__)


def make_budget(
    chunk: ChunkParams,
    embed: EmbedParams,
    preprocess: PreprocessParams | None = None,
    counter: TokenCounter | None = None,
) -> TokenBudget:
    """The token budget for chunks of this config (loads the model's tokenizer, not its weights)."""
    counter = counter or load_token_counter(embed)
    window = min(chunk.max_tokens, counter.max_tokens)
    prompt = counter.count(embed.passage_prompt) if embed.passage_prompt else 0
    max_tokens = window - counter.special_tokens - prompt
    if max_tokens < 4:
        raise ConfigError(
            f"chunk budget too small: min(chunk.max_tokens={chunk.max_tokens}, model window="
            f"{counter.max_tokens}) - {counter.special_tokens} special - {prompt} prompt tokens "
            f"= {max_tokens}"
        )
    return TokenBudget(
        counter=counter,
        max_tokens=max_tokens,
        overlap_tokens=min(chunk.overlap_tokens, max_tokens // 2),
        min_tokens=chunk.min_tokens,
        heading_prefix=chunk.heading_prefix,
        context_template=chunk.context_template,
        transform=EmbedTransform(preprocess or PreprocessParams.model_validate({})),
        window=window,
    )


def chunker_for(params: ChunkParams) -> Chunker:
    return chunkers.chunker_for(params.strategy)


def chunk_document(doc: Document, budget: TokenBudget, chunker: Chunker) -> list[Chunk]:
    return list(chunker.split(doc, budget))


def run_chunk(cfg: Config, art: Artifacts) -> dict[str, Any]:
    """Chunk ``art.documents`` into ``art.chunks``; return flat stats."""
    t0 = time.perf_counter()
    budget = make_budget(cfg.chunk, cfg.embed, cfg.preprocess)
    chunker = chunker_for(cfg.chunk)
    docs = chunks = tokens_total = tokens_max = 0
    by_strategy: dict[str, int] = {}
    with ParquetSink(art.chunks, Chunk) as sink:
        for doc in iter_records(art.documents, Document):
            docs += 1
            for ch in chunker.split(doc, budget):
                sink.write(ch)
                chunks += 1
                tokens_total += ch.token_count
                tokens_max = max(tokens_max, ch.token_count)
                strategy = str(ch.metadata.get("strategy", chunker.name))
                by_strategy[strategy] = by_strategy.get(strategy, 0) + 1
    stats: dict[str, Any] = {
        "documents": docs,
        "chunks": chunks,
        "tokens_total": tokens_total,
        "tokens_max": tokens_max,
        "tokens_mean": round(tokens_total / chunks, 2) if chunks else 0.0,
        "token_budget": budget.max_tokens,
        "split_sentences": budget.stats["split_sentences"],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    stats.update({f"chunks_{k}": v for k, v in sorted(by_strategy.items())})
    log.info(
        "chunk: %d documents -> %d chunks (max %d tokens of %d)",
        docs,
        chunks,
        tokens_max,
        budget.max_tokens,
    )
    return stats
