"""Sliding-window chunker: windows of the model's tokens, ``chunk.overlap_tokens`` apart.

Windows are filled token by token but cut only where a word starts (a token preceded by
whitespace), so a window never ends inside a word; a "word" longer than the budget (a URL, a blob)
is cut at token boundaries like any over-long unit.
"""

from __future__ import annotations

from collections.abc import Iterator

from embedline.tasks.chunkers.base import ChunkBuilder, Packer, TokenBudget, Unit
from embedline.tasks.records import Chunk, Document


def word_units(b: ChunkBuilder, start: int, end: int) -> list[Unit]:
    """One unit per whitespace-delimited run of tokens of text[start:end], contiguous (a unit runs to
    the next one's start, so characters the tokenizer drops are still covered); ``tokens`` is the
    number of model tokens in it."""
    text = b.text
    spans = b.token_index.spans(start, end)
    if not spans:
        return [b.unit(start, end)] if text[start:end].strip() else []
    starts, sizes = [start], [0]
    for k, (a, _) in enumerate(spans):
        if k and a > spans[k - 1][1] and text[spans[k - 1][1] : a].isspace():
            starts.append(a)
            sizes.append(0)
        sizes[-1] += 1
    ends = [*starts[1:], end]
    return [Unit(s, e, n, "word") for s, e, n in zip(starts, ends, sizes, strict=True)]


class SlidingChunker:
    name = "sliding"

    def split(self, doc: Document, budget: TokenBudget) -> Iterator[Chunk]:
        b = ChunkBuilder(doc, budget, self.name)
        yield from Packer(b).pack(word_units(b, 0, len(doc.text)))
