"""A token index of one document: the model tokenizer runs once over the text (in segments), then
the token count of any span is two binary searches instead of another tokenizer call."""

from __future__ import annotations

from array import array
from bisect import bisect_left

from embedline.tasks.tokenize import TokenCounter

SEGMENT_CHARS = 32_768  # tokenised per call; cut at whitespace so no token crosses a segment


def segments(text: str, size: int = SEGMENT_CHARS) -> list[tuple[int, int]]:
    out, pos, n = [], 0, len(text)
    while pos < n:
        end = min(n, pos + size)
        if end < n:
            cut = max(text.rfind("\n", pos, end), text.rfind(" ", pos, end))
            end = cut + 1 if cut > pos else end
        out.append((pos, end))
        pos = end
    return out


class TokenIndex:
    """Start/end offsets of every token of ``text`` (compact arrays, built on first use)."""

    def __init__(self, text: str, counter: TokenCounter):
        self.text = text
        self.counter = counter
        self._starts: array[int] | None = None
        self._ends: array[int] = array("q")

    def _build(self) -> array[int]:
        batch = getattr(self.counter, "spans_batch", None)
        if self._starts is None and batch is None and hasattr(self.counter, "offset_arrays"):
            # the counter gives whole-text offsets as arrays (no per-token Python objects)
            a, b = self.counter.offset_arrays(self.text)
            self._starts, self._ends = array("q", a.tobytes()), array("q", b.tobytes())
        if self._starts is None:
            starts, ends = array("q"), array("q")
            cuts = segments(self.text)
            texts = [self.text[s:e] for s, e in cuts]
            # one tokenizer call for all segments
            per_segment = batch(texts) if batch is not None else [self.counter.spans(t) for t in texts]
            for (s, _), spans in zip(cuts, per_segment, strict=True):
                starts.extend([s + a for a, _ in spans])
                ends.extend([s + b for _, b in spans])
            self._starts, self._ends = starts, ends
        return self._starts

    def count(self, start: int, end: int) -> int:
        """Tokens starting inside [start, end) (exact for word-piece tokenizers at word boundaries)."""
        starts = self._starts if self._starts is not None else self._build()
        return bisect_left(starts, end) - bisect_left(starts, start)

    def spans(self, start: int, end: int) -> list[tuple[int, int]]:
        starts = self._build()
        i, j = bisect_left(starts, start), bisect_left(starts, end)
        return [(starts[k], min(self._ends[k], end)) for k in range(i, j)]
