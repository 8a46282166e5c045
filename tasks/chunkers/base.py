"""The machinery every chunker shares: the token budget, units, and a packer that never overflows.

A chunker cuts a document into *units* (sentences, lines, code blocks, table rows, tokens) given as
character spans of ``Document.text`` that together cover all of its non-whitespace text; the
:class:`Packer` groups consecutive units into chunks up to the budget with overlap, and the
:class:`ChunkBuilder` turns a group into a :class:`~embedline.tasks.records.Chunk`. Unit token counts are
estimates (tokens of the transformed unit text); every chunk is measured again on its final
embed text, and a group that does not fit is shrunk, so no chunk's embed text ever exceeds
``TokenBudget.max_tokens``. A unit that is too long on its own is split at line boundaries, then at
token boundaries (``TokenCounter.spans``), preferring word starts.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any

from embedline.tasks.chunkers.context import context_budget, render
from embedline.tasks.chunkers.tokens import TokenIndex
from embedline.tasks.normalize import EmbedTransform
from embedline.tasks.records import Chunk, Document, chunk_id_for, content_hash
from embedline.tasks.tokenize import TokenCounter

_DASHES = re.compile(r"-{4,}")
_TOKENS = attrgetter("tokens")
# whitespace every ``whitespace_split`` tokenizer splits at (BERT's normaliser drops \f, \v, \x1c..)
_SPLIT_WS = frozenset(" \t\n\r")


class ChunkingError(RuntimeError):
    """A text cannot be made to fit the budget (e.g. a budget smaller than one token's expansion)."""


@dataclass(frozen=True)
class TokenBudget:
    """What a chunk may cost: ``max_tokens`` for the embed text (model window minus the special
    tokens and the passage prompt), plus the knobs chunkers need."""

    counter: TokenCounter
    max_tokens: int
    overlap_tokens: int = 0
    min_tokens: int = 1
    heading_prefix: bool = True
    transform: EmbedTransform | None = None
    context_template: str = ""  # chunk.context_template: title + heading path in the embed text
    window: int = 0  # the model window (special tokens included), for reporting
    stats: Counter[str] = field(
        default_factory=Counter, compare=False, repr=False
    )  # split_sentences


@dataclass(frozen=True)
class Unit:
    start: int
    end: int
    tokens: int
    kind: str = "text"


@dataclass(frozen=True)
class Table:
    """A table block: kept whole when it fits; otherwise rows are packed with the header repeated."""

    start: int
    end: int
    tokens: int
    header: (
        tuple[int, int] | None
    )  # span of the header line(s) (markdown header + separator, caption)
    rows: tuple[Unit, ...]


Item = Unit | Table


class ChunkBuilder:
    """Per-document helper: measures texts and numbers the chunks it makes."""

    def __init__(self, doc: Document, budget: TokenBudget, strategy: str):
        self.doc = doc
        self.text = doc.text
        self.budget = budget
        self.strategy = strategy
        self.code_language = doc.metadata.get("language", "text") if doc.format == "code" else None
        self.index = 0
        self.token_index = TokenIndex(doc.text, budget.counter)
        # with the identity transform, a span's tokens can be read off the document's token index
        self._indexed = budget.transform is None or budget.transform.identity
        # ... and, for a tokenizer whose tokens never cross whitespace, so can a chunk's exact cost
        self._additive = self._indexed and bool(getattr(budget.counter, "whitespace_split", False))
        self._head_tokens: dict[str, int] = {}  # context header + prefix -> tokens

    def embed(self, text: str) -> str:
        t = self.budget.transform
        return text if t is None else t(text, self.code_language)

    def tokens(self, text: str) -> int:
        return self.budget.counter.count(self.embed(text))

    def unit(self, start: int, end: int, kind: str = "text") -> Unit:
        """A span with its estimated cost (every chunk is measured exactly before it is made)."""
        if self._indexed:
            return Unit(start, end, self.token_index.count(start, end), kind)
        return Unit(start, end, self.tokens(self.text[start:end]), kind)

    def make(
        self,
        start: int,
        end: int,
        display: str,
        *,
        heading_path: tuple[str, ...] = (),
        meta: dict[str, Any] | None = None,
        measured: tuple[str, int] | None = None,
        path_in_text: bool = False,
    ) -> Chunk:
        embed_text, n = measured or self.measure(display, heading_path, path_in_text)
        if n > self.budget.max_tokens:  # the packer prevents this; keep the invariant explicit
            raise ChunkingError(
                f"{self.doc.source}: chunk of {n} tokens > {self.budget.max_tokens}"
            )
        text_hash = content_hash(embed_text)
        chunk = Chunk(
            chunk_id=chunk_id_for(self.doc.doc_id, text_hash, self.index),
            doc_id=self.doc.doc_id,
            source=self.doc.source,
            title=self.doc.title,
            text=display,
            embed_text=embed_text,
            text_hash=text_hash,
            chunk_index=self.index,
            char_start=start,
            char_end=end,
            token_count=n,
            heading_path=heading_path,
            # the document's own fields (JSON record fields, front matter, encoding) travel to the
            # payload under "document", so they can be filtered on in Qdrant
            metadata={"strategy": self.strategy, "format": self.doc.format, **(meta or {}),
                      **({"document": self.doc.metadata} if self.doc.metadata else {})},
        )
        self.index += 1
        return chunk

    def measure(
        self, display: str, heading_path: tuple[str, ...] = (), path_in_text: bool = False,
        span: tuple[int, int] | None = None,
    ) -> tuple[str, int]:
        """(embed text, its token count): the display text with its context (title, heading path;
        :mod:`embedline.tasks.chunkers.context`), then the embed transform. ``span``: the
        document span ``display`` ends with (lets :meth:`_indexed_count` skip the tokenizer)."""
        text = render(
            self.budget.context_template, title=self.doc.title, path=heading_path, text=display,
            path_in_text=path_in_text,
        )
        embed_text = self.embed(text)
        n = self._indexed_count(embed_text, span) if span is not None and self._additive else None
        return embed_text, self.budget.counter.count(embed_text) if n is None else n

    def _indexed_count(self, embed_text: str, span: tuple[int, int]) -> int | None:
        """Exact tokens of ``embed_text`` = tokens of its head (context header, prefix) + the
        document's indexed tokens of ``span``, when it ends with that span and every join is at
        whitespace the tokenizer splits on (so no token crosses it); else None (count it)."""
        s, e = span
        text = self.text
        if e <= s or not (s == 0 or text[s - 1] in _SPLIT_WS) or not (
            e == len(text) or text[e] in _SPLIT_WS
        ):
            return None
        cut = len(embed_text) - (e - s)
        if cut < 0 or not embed_text.endswith(text[s:e]) or (cut and embed_text[cut - 1] not in _SPLIT_WS):
            return None
        head = embed_text[:cut]
        n = self._head_tokens.get(head)
        if n is None:
            n = self._head_tokens[head] = self.budget.counter.count(head) if head else 0
        return n + self.token_index.count(s, e)

    def context_tokens(self, heading_path: tuple[str, ...], path_in_text: bool) -> int:
        """Tokens the context header may add to a chunk with this heading path (reserved)."""
        header = context_budget(
            self.budget.context_template, title=self.doc.title, path=heading_path,
            path_in_text=path_in_text,
        )
        return self.tokens(header) if header else 0

    # ---- splitting a unit that is too long on its own ----
    def split_unit(self, u: Unit, room: int) -> list[Unit]:
        """Split ``u`` into contiguous smaller units: at line breaks if it has several lines, else at
        token boundaries into pieces of at most ``room`` tokens (scaled down if the embed transform
        makes text longer than it looks)."""
        text = self.text
        lines = _line_spans(text, u.start, u.end)
        if len(lines) > 1:
            return [self.unit(s, e, u.kind) for s, e in lines]
        self.budget.stats["split_sentences"] += 1  # a unit too long on its own
        s0 = u.start
        spans = self.budget.counter.spans(text[u.start : u.end])
        n = len(spans)
        target = room if u.tokens <= n else max(1, (room * n) // max(u.tokens, 1))
        if n <= 1 or target >= n:
            if n <= 1:
                raise ChunkingError(
                    f"{self.doc.source}: text at {u.start}-{u.end} costs {u.tokens} tokens, "
                    f"more than the budget of {room}, and cannot be split further"
                )
            target = n - 1
        target = -(-n // -(-n // target))  # balanced pieces: no tiny tail piece
        pieces: list[Unit] = []
        i, start = 0, u.start
        while i < n:
            j = min(n, i + target)
            if j < n:
                k = _word_boundary(text, s0, spans, i, j)
                j = k if k > i else j
            end = u.end if j >= n else s0 + spans[j][0]
            if text[start:end].strip():
                pieces.append(self.unit(start, end, u.kind))
            start, i = end, j
        return pieces


def _word_boundary(text: str, s0: int, spans: Sequence[tuple[int, int]], i: int, j: int) -> int:
    """The largest k in (i + (j-i)//2, j] where token k starts a new word (whitespace before it)."""
    lo = i + max(1, (j - i) // 2)
    for k in range(j, lo - 1, -1):
        gap = text[s0 + spans[k - 1][1] : s0 + spans[k][0]]
        if gap and gap.isspace():
            return k
    return j


def _line_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Non-blank lines of text[start:end], contiguous (each runs to the next one's start)."""
    starts = [start]
    pos = text.find("\n", start, end)
    while pos != -1:
        starts.append(pos + 1)
        pos = text.find("\n", pos + 1, end)
    starts = [s for s in starts if s < end and text[s : _eol(text, s, end)].strip()]
    if not starts:
        return []
    starts[0] = start
    return [(s, e) for s, e in zip(starts, [*starts[1:], end], strict=True)]


def _eol(text: str, s: int, end: int) -> int:
    e = text.find("\n", s, end)
    return end if e == -1 else e


@dataclass
class Packer:
    """Greedy packing of units into chunks of at most ``budget.max_tokens`` (prefix included)."""

    b: ChunkBuilder
    prefix: str = ""
    heading_path: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    overlap: int | None = None  # tokens carried between chunks; None = budget.overlap_tokens
    first_prefix: str | None = (
        None  # prefix for a chunk starting at ``head`` (its heading is in it)
    )
    head: int = -1
    prefix_cap: float = 1 / 3  # a prefix costing more than this share of the budget is dropped

    def __post_init__(self) -> None:
        self.limit = self.b.budget.max_tokens
        if self.prefix and self.b.tokens(self.prefix) > self.limit * self.prefix_cap:
            self.prefix = ""  # a heading path that eats the budget is not worth it
        self.room = self.limit - (self.b.tokens(self.prefix) if self.prefix else 0)
        context = self.b.context_tokens(self.heading_path, bool(self.prefix))
        if context > self.room // 3:  # a context that eats the budget: the chunk goes without it
            context = 0
            self._context = False
        else:
            self._context = True
        self.room -= context
        self.carry_tokens = self.b.budget.overlap_tokens if self.overlap is None else self.overlap
        self._queue: deque[Item] = deque()
        self._cur: list[Unit] = []
        self._carried = 0  # leading units of _cur that repeat the previous chunk's tail

    def pack(self, items: Iterable[Item]) -> Iterator[Chunk]:
        q = self._queue
        q.extend(items)
        while q or self._has_new():
            if not q:
                yield from self._flush()
                continue
            it = q.popleft()
            if isinstance(it, Table):
                if it.tokens > self.room:
                    if self._has_new():  # finish the running chunk first, then the table
                        q.appendleft(it)
                        yield from self._flush()
                    else:
                        self._cur, self._carried = [], 0
                        yield from self._table(it)
                    continue
                it = Unit(it.start, it.end, it.tokens, "table")
            if it.tokens > self.room:
                q.extendleft(reversed(self.b.split_unit(it, self.room)))
                continue
            if self._cur_tokens() + it.tokens > self.room:
                if self._has_new():
                    q.appendleft(it)
                    yield from self._flush()
                    continue
                while self._cur and self._cur_tokens() + it.tokens > self.room:
                    self._cur.pop(0)  # shorten the overlap so the new unit fits
                    self._carried -= 1
            self._cur.append(it)
        self._cur, self._carried = [], 0

    def _has_new(self) -> bool:
        return len(self._cur) > self._carried

    def _cur_tokens(self) -> int:
        return sum(map(_TOKENS, self._cur))

    def _span(self, units: Sequence[Unit]) -> tuple[int, int]:
        """The units' span without blank lines before it or whitespace after it."""
        text, s, e = self.b.text, units[0].start, units[-1].end
        lead = len(text[s:e]) - len(text[s:e].lstrip())
        nl = text.rfind("\n", s, s + lead)
        s = nl + 1 if nl != -1 else s
        return s, s + len(text[s:e].rstrip())

    def _display(self, units: Sequence[Unit]) -> str:
        return self._display_span(units)[0]

    def _display_span(self, units: Sequence[Unit]) -> tuple[str, tuple[int, int]]:
        """The display text of ``units`` and the document span it ends with."""
        s, e = self._span(units)
        prefix = self.prefix
        if self.first_prefix is not None and units[0].start == self.head:
            prefix = self.first_prefix
        return prefix + self.b.text[s:e], (s, e)

    def _flush(self) -> Iterator[Chunk]:
        """Emit the current units as one chunk (or a fitting prefix of them, re-queuing the rest);
        the chunk's tail stays as overlap for the next one."""
        while self._has_new():
            k, measured = self._largest_fit()
            if k > self._carried:
                units, rest = self._cur[:k], self._cur[k:]
                start, end = self._span(units)
                if end > start:
                    yield self.b.make(
                        start,
                        end,
                        self._display(units),
                        heading_path=self.heading_path,
                        meta=self.meta,
                        measured=measured,
                        path_in_text=bool(self.prefix),
                    )
                self._queue.extendleft(reversed(rest))
                self._set_carry(units)
                return
            if self._carried:  # even one new unit plus the overlap does not fit: drop the overlap
                del self._cur[: self._carried]
                self._carried = 0
                continue
            # a single unit that looked small enough but measures too long (the embed transform
            # or a prefix changed its cost): split it finer
            first = self._cur[0]
            cost = self._measure(*self._display_span([first]))[1]
            shrunk = Unit(first.start, first.end, max(cost, first.tokens + 1), first.kind)
            self._queue.extendleft(
                reversed([*self.b.split_unit(shrunk, self.room), *self._cur[1:]])
            )
            self._cur, self._carried = [], 0

    def _measure(self, display: str, span: tuple[int, int] | None = None) -> tuple[str, int]:
        if not self._context:
            return self.b.measure(display, span=span)  # the context does not fit this packer's chunks
        return self.b.measure(display, self.heading_path, bool(self.prefix), span)

    def _largest_fit(self) -> tuple[int, tuple[str, int] | None]:
        cur = self._cur
        m = self._measure(*self._display_span(cur))
        if m[1] <= self.limit:
            return len(cur), m
        lo, hi, best = 0, len(cur), None  # invariant: cur[:lo] fits (or lo == 0), cur[:hi] does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            mm = self._measure(*self._display_span(cur[:mid]))
            if mm[1] <= self.limit:
                lo, best = mid, mm
            else:
                hi = mid
        return lo, best

    def _set_carry(self, units: Sequence[Unit]) -> None:
        carry: list[Unit] = []
        if self.carry_tokens > 0:
            total = 0
            for u in reversed(units[1:]):  # never carry a whole chunk
                if u.kind == "table" or total + u.tokens > self.carry_tokens:
                    break
                carry.insert(0, u)
                total += u.tokens
        self._cur, self._carried = carry, len(carry)

    def _table(self, t: Table) -> Iterator[Chunk]:
        """A table over the budget: rows packed into parts, each part starting with the header."""
        if t.header is None:
            sub = Packer(self.b, self.prefix, self.heading_path, {**self.meta, "table": True}, 0)
            yield from sub.pack(t.rows)
            return
        header = self.b.text[t.header[0] : t.header[1]].rstrip("\n")
        header = _DASHES.sub("---", header)  # |-------|---------| costs a token per dash
        sub = Packer(
            self.b,
            self.prefix + header + "\n",
            self.heading_path,
            {**self.meta, "table": True},
            0,
            prefix_cap=0.5,
        )
        if (
            not sub.prefix
        ):  # header too long to repeat: rows alone, header covered by the first part
            sub = Packer(self.b, self.prefix, self.heading_path, {**self.meta, "table": True}, 0)
            yield from sub.pack(
                [Unit(t.header[0], t.header[1], self.b.tokens(header), "text"), *t.rows]
            )
            return
        for n, chunk in enumerate(sub.pack(t.rows)):
            yield replace(chunk, char_start=t.start) if n == 0 else chunk
