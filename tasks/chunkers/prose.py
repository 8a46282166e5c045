"""Sentence and Markdown chunkers (prose)."""

from __future__ import annotations

from collections.abc import Iterator

from embedline.tasks.chunkers.base import ChunkBuilder, Packer, TokenBudget
from embedline.tasks.chunkers.segment import block_items, sections
from embedline.tasks.records import Chunk, Document


class SentenceChunker:
    """Sentences (abbreviation-safe, offline) packed up to the budget, overlapping by whole
    sentences of at most ``chunk.overlap_tokens``; headings, code blocks and tables stay whole."""

    name = "sentence"

    def split(self, doc: Document, budget: TokenBudget) -> Iterator[Chunk]:
        b = ChunkBuilder(doc, budget, self.name)
        yield from Packer(b).pack(block_items(b, 0, len(doc.text)))


class MarkdownChunker:
    """One packing run per heading section; the heading path goes to ``Chunk.heading_path`` and,
    with ``chunk.heading_prefix``, in front of the chunk text ("Guide > Install\\n\\n...")."""

    name = "markdown"

    def split(self, doc: Document, budget: TokenBudget) -> Iterator[Chunk]:
        b = ChunkBuilder(doc, budget, self.name)
        for sec in sections(doc.text):
            packer = Packer(b, heading_path=sec.path)
            if budget.heading_prefix and sec.path:
                # the first chunk holds the section's own heading line(s): prefix only the parents
                parents = sec.path[: max(0, len(sec.path) - sec.head_lines)]
                packer = Packer(
                    b,
                    prefix=_prefix(sec.path),
                    heading_path=sec.path,
                    first_prefix=_prefix(parents),
                    head=sec.start,
                )
            yield from packer.pack(block_items(b, sec.start, sec.end))


def _prefix(path: tuple[str, ...]) -> str:
    return " > ".join(path) + "\n\n" if path else ""
