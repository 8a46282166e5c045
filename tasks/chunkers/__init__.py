"""Chunkers: one :class:`Chunker` per ``chunk.strategy``, in the :data:`CHUNKERS` registry.

``auto`` picks per document: markdown for Markdown/HTML/man-page documents (their headings give a heading
path), code for source code, sentence for everything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

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
        return CHUNKERS[strategy].split(doc, budget)


CHUNKERS: dict[ChunkStrategy, Chunker] = {
    ChunkStrategy.sentence: SentenceChunker(),
    ChunkStrategy.sliding: SlidingChunker(),
    ChunkStrategy.markdown: MarkdownChunker(),
    ChunkStrategy.code: CodeChunker(),
    ChunkStrategy.auto: AutoChunker(),
}

__all__ = [
    "ABBREVIATIONS",
    "CHUNKERS",
    "ChunkBuilder",
    "Chunker",
    "ChunkingError",
    "Packer",
    "Table",
    "TokenBudget",
    "Unit",
    "blocks",
    "sections",
    "sentence_spans",
]
