"""Chunkers: one :class:`Chunker` per ``chunk.strategy``, listed in :data:`embedline.tasks.plugins.CHUNKERS`
(re-exported here); :func:`chunker_for` builds one by name.

``auto`` picks per document: markdown for Markdown/HTML/man-page documents (their headings give a heading
path), code for source code, sentence for everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, cast

from embedline.tasks.chunkers.base import (
    ChunkBuilder,
    ChunkingError,
    Packer,
    Table,
    TokenBudget,
    Unit,
)
from embedline.tasks.chunkers.code import CodeChunker
from embedline.tasks.chunkers.prose import MarkdownChunker, SentenceChunker
from embedline.tasks.chunkers.segment import ABBREVIATIONS, blocks, sections, sentence_spans
from embedline.tasks.chunkers.sliding import SlidingChunker
from embedline.tasks.config import ChunkStrategy
from embedline.tasks.plugins import CHUNKERS
from embedline.tasks.records import Chunk, Document


class Chunker(Protocol):
    name: str

    def split(self, doc: Document, budget: TokenBudget) -> Iterable[Chunk]: ...


AUTO_BY_FORMAT: dict[str, ChunkStrategy] = {
    "markdown": ChunkStrategy.markdown,
    "html": ChunkStrategy.markdown,
    "man": ChunkStrategy.markdown,
    "code": ChunkStrategy.code,
}


class AutoChunker:
    name = "auto"

    def split(self, doc: Document, budget: TokenBudget) -> Iterable[Chunk]:
        strategy = AUTO_BY_FORMAT.get(doc.format, ChunkStrategy.sentence)
        return chunker_for(strategy).split(doc, budget)


def chunker_for(strategy: str) -> Chunker:
    """A chunker for ``chunk.strategy`` (ValueError naming the valid choices if none is registered)."""
    factory = cast(Callable[[], Chunker], CHUNKERS.load(strategy))
    return factory()

__all__ = [
    "ABBREVIATIONS",
    "CHUNKERS",
    "ChunkBuilder",
    "Chunker",
    "ChunkingError",
    "CodeChunker",
    "MarkdownChunker",
    "Packer",
    "SentenceChunker",
    "SlidingChunker",
    "Table",
    "TokenBudget",
    "Unit",
    "blocks",
    "chunker_for",
    "sections",
    "sentence_spans",
]
