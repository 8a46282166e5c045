"""Cutting text into blocks, sections and sentences (offline, abbreviation-safe).

Sentence route (no downloads): NLTK's :class:`~nltk.tokenize.punkt.PunktSentenceTokenizer` built
from :class:`~nltk.tokenize.punkt.PunktParameters` whose ``abbrev_types`` are filled from the
curated :data:`ABBREVIATIONS` list below. The pre-trained ``punkt``/``punkt_tab`` data (which
``nltk.sent_tokenize`` needs and which cannot be downloaded here) is never touched. Punkt's own
rules already keep decimals ("3.14"), initials ("J. R. R. Tolkien") and ellipses inside a
sentence; the abbreviation list keeps "Dr. Smith", "e.g. this", "the U.S. Army", "Fig. 3" together.

Blocks are found line by line: fenced code (``` or ~~~), ATX headings (``#`` .. ``######``),
Markdown pipe tables (header + ``|---|`` separator), runs of header-labelled rows
("Col: value; Col2: value", as the HTML loader writes tables, optionally after a ``Table:``
caption), and paragraphs (runs of non-blank lines). Headings inside fences are not headings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from embedline.tasks import resources
from embedline.tasks.chunkers.base import ChunkBuilder, Item, Table

_ABBREVIATION_GROUPS = (
    # titles and ranks
    "mr mrs ms mx dr prof sr jr st rev fr gen col capt cpt lt sgt maj cmdr adm gov sen rep hon pres",
    "supt insp det messrs mme mlle ph.d m.d b.a m.a b.sc m.sc ll.b d.phil",
    # Latin and scholarly
    "e.g i.e etc vs v cf al viz ca approx appr esp incl excl resp ibid op cit n.b p.s a.k.a",
    # references into a text
    "fig figs eq eqs tab tabs sec secs ch chap chaps p pp para paras vol vols no nos ed eds",
    "art arts ref refs app suppl ser pt pts ex exs nr",
    # time and dates
    "a.m p.m b.c a.d b.c.e c.e jan feb mar apr jun jul aug sep sept oct nov dec",
    "mon tue tues wed thu thur thurs fri sat sun",
    # places and organisations
    "u.s u.s.a u.k u.n e.u u.s.s.r d.c n.y l.a mt ft ave blvd rd hwy sq apt bldg",
    "inc ltd co corp dept univ assn bros est div mfg intl natl",
    # measures
    "min max avg std dev misc",
)
# punkt stores abbreviations lower-cased and without their final period ("e.g." -> "e.g")
ABBREVIATIONS = frozenset(w for group in _ABBREVIATION_GROUPS for w in group.split())

_FENCE = re.compile(r"^ {0,3}(```+|~~~+)")
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_PIPE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_LABELLED = re.compile(r"^[^:;|\n]{1,80}: [^\n]*; [^:;|\n]{1,80}: ")
_CAPTION = re.compile(r"^Table: \S")


def _punkt() -> Any:
    return resources.get("punkt", "abbreviations", _build_punkt)


# a candidate break "word. Next" after a plain ASCII word of 2+ letters: punkt's word tokens are
# "word." and "Next"; its first pass marks "word." a break unless "word" is an abbreviation, and
# its second pass only revisits abbreviations, ellipses, initials and numbers (the collocation,
# sentence-starter and orthographic tables are empty here): the answer needs no tokenising
_PLAIN_BREAK = re.compile(r"([A-Za-z]{2,})\.\s+\S+")


def _build_punkt() -> Any:
    punkt = _punkt_module()
    params = punkt.PunktParameters()
    params.abbrev_types = set(ABBREVIATIONS)
    tok = punkt.PunktSentenceTokenizer(params)
    # a pure function of the context around a candidate break ("word. Next") and the fixed
    # params; the same contexts recur across paragraphs and documents
    slow = lru_cache(maxsize=1 << 16)(tok.text_contains_sentbreak)
    abbreviations = params.abbrev_types

    def text_contains_sentbreak(context: str) -> bool:
        plain = _PLAIN_BREAK.fullmatch(context)
        return plain.group(1).lower() not in abbreviations if plain else bool(slow(context))

    tok.text_contains_sentbreak = text_contains_sentbreak
    return tok


def _punkt_module() -> Any:
    """``nltk.tokenize.punkt`` without running ``nltk/__init__.py``, which imports all of NLTK
    (scipy.stats, sklearn wrappers: ~3 CPU seconds) although punkt needs only a few small
    modules. If NLTK is not imported yet, empty stand-ins for the ``nltk`` and ``nltk.tokenize``
    packages (their real search paths, no ``__init__`` run) are in ``sys.modules`` while punkt is
    imported, under the import lock, then every ``nltk`` entry is taken out again: a later
    ``import nltk`` anywhere gets the whole real package, and this private copy of punkt lives on
    in the tokenizer that uses it."""
    import _imp
    import importlib
    import importlib.util
    import sys
    import types

    _imp.acquire_lock()  # no other thread imports while the stand-ins are in place
    try:
        if "nltk" in sys.modules:  # already imported for real: nothing to save
            return importlib.import_module("nltk.tokenize.punkt")
        spec = importlib.util.find_spec("nltk")
        if spec is None or not spec.submodule_search_locations:
            return importlib.import_module("nltk.tokenize.punkt")  # raises the usual ImportError
        before = {k for k in sys.modules if k == "nltk" or k.startswith("nltk.")}
        for name, path in (("nltk", list(spec.submodule_search_locations)),
                           ("nltk.tokenize", [f"{p}/tokenize" for p in spec.submodule_search_locations])):
            stand_in = types.ModuleType(name)
            stand_in.__path__ = path
            sys.modules[name] = stand_in
        try:
            return importlib.import_module("nltk.tokenize.punkt")
        finally:
            for k in [k for k in sys.modules if (k == "nltk" or k.startswith("nltk.")) and k not in before]:
                del sys.modules[k]
    finally:
        _imp.release_lock()


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentences of text[start:end] as contiguous spans (gaps hold only whitespace)."""
    end = len(text) if end is None else end
    piece = text[start:end]
    if "." not in piece and "?" not in piece and "!" not in piece:
        # no sentence-ending character: punkt would return the whole (right-stripped) text
        kept = len(piece.rstrip())
        return [(start, start + kept)] if kept else []
    raw = [(start + a, start + b) for a, b in _punkt().span_tokenize(piece)]
    if not raw:
        return [(start, end)] if text[start:end].strip() else []
    starts = [start] + [a for a, _ in raw[1:]]
    ends = [*starts[1:], end]
    out = []
    for a, b in zip(starts, ends, strict=True):
        b2 = a + len(text[a:b].rstrip())
        if b2 > a:
            out.append((a, b2))
    return out


class Line(NamedTuple):  # a tuple: made once per line of every document, cheaper than a dataclass
    start: int
    end: int  # excluding the newline
    text: str


def lines_of(text: str, start: int = 0, end: int | None = None) -> list[Line]:
    end = len(text) if end is None else end
    out, pos = [], start
    while pos < end:
        nl = text.find("\n", pos, end)
        stop = end if nl == -1 else nl
        out.append(Line(pos, stop, text[pos:stop]))
        pos = stop + 1
    return out


@dataclass(frozen=True)
class Block:
    kind: str  # paragraph | heading | code | table
    start: int
    end: int
    header_end: int | None = None  # tables: end of the header lines
    rows: tuple[tuple[int, int], ...] = ()


def blocks(text: str, start: int = 0, end: int | None = None) -> Iterator[Block]:
    lines = lines_of(text, start, end)
    i, n = 0, len(lines)
    while i < n:
        ln = lines[i]
        if not ln.text.strip():
            i += 1
            continue
        fence = _FENCE.match(ln.text)
        if fence:
            j = i + 1
            while j < n and not lines[j].text.lstrip().startswith(fence.group(1)[:3]):
                j += 1
            j = min(j, n - 1)
            yield Block("code", ln.start, lines[j].end)
            i = j + 1
            continue
        if _ATX.match(ln.text):
            yield Block("heading", ln.start, ln.end)
            i += 1
            continue
        table = _table_at(lines, i)
        if table is not None:
            block, i = table
            yield block
            continue
        j = i + 1
        while j < n and lines[j].text.strip() and not _starts_block(lines, j):
            j += 1
        yield Block("paragraph", ln.start, lines[j - 1].end)
        i = j


def _starts_block(lines: list[Line], j: int) -> bool:
    t = lines[j].text
    return bool(_FENCE.match(t) or _ATX.match(t)) or _table_at(lines, j) is not None


def _table_at(lines: list[Line], i: int) -> tuple[Block, int] | None:
    n = len(lines)
    t = lines[i].text
    if "|" in t and i + 1 < n and _PIPE_SEP.match(lines[i + 1].text) and "|" in lines[i + 1].text:
        j = i + 2
        while j < n and "|" in lines[j].text and lines[j].text.strip():
            j += 1
        rows = tuple((ln.start, ln.end) for ln in lines[i + 2 : j])
        return Block("table", lines[i].start, lines[j - 1].end, lines[i + 1].end, rows), j
    caption = bool(_CAPTION.match(t))
    k = i + 1 if caption else i
    j = k
    while j < n and _LABELLED.match(lines[j].text):
        j += 1
    if j - k >= 2 or (caption and j - k >= 1):
        rows = tuple((ln.start, ln.end) for ln in lines[k:j])
        header_end = lines[i].end if caption else None
        return Block("table", lines[i].start, lines[j - 1].end, header_end, rows), j
    return None


def block_items(b: ChunkBuilder, start: int, end: int) -> list[Item]:
    """Units for the packer: sentences of paragraphs, whole headings and code blocks, tables."""
    items: list[Item] = []
    text = b.text
    for blk in blocks(text, start, end):
        if blk.kind == "paragraph":
            items.extend(b.unit(s, e) for s, e in sentence_spans(text, blk.start, blk.end))
        elif blk.kind == "table":
            rows = tuple(b.unit(s, e, "row") for s, e in blk.rows)
            header = (blk.start, blk.header_end) if blk.header_end is not None else None
            items.append(
                Table(blk.start, blk.end, b.tokens(text[blk.start : blk.end]), header, rows)
            )
        else:
            items.append(b.unit(blk.start, blk.end, blk.kind))
    return items


@dataclass(frozen=True)
class Section:
    start: int
    end: int
    path: tuple[str, ...]
    head_lines: int = 0  # heading lines at the start of the section (more than one when merged)


def sections(text: str) -> list[Section]:
    """Split at ATX headings (outside fences). A section that holds only its heading is merged into
    the next one, so every section has a body."""
    marks: list[tuple[int, int, str]] = []  # (offset, level, title)
    fence = ""
    for ln in lines_of(text):
        m = _FENCE.match(ln.text)
        if m:
            tick = m.group(1)[:3]
            fence = "" if fence == tick else (fence or tick)
            continue
        if fence:
            continue
        h = _ATX.match(ln.text)
        if h and h.group(2).strip():
            marks.append((ln.start, len(h.group(1)), h.group(2).strip()))
    out: list[Section] = []
    if not marks or (marks[0][0] > 0 and text[: marks[0][0]].strip()):
        out.append(Section(0, marks[0][0] if marks else len(text), ()))
    stack: list[tuple[int, str]] = []
    pending: int | None = None
    merged = 0
    for idx, (off, level, title) in enumerate(marks):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end = marks[idx + 1][0] if idx + 1 < len(marks) else len(text)
        start = off if pending is None else pending
        nl = text.find("\n", off, end)
        body = "" if nl == -1 else text[nl + 1 : end]
        merged += 1
        if not body.strip() and idx + 1 < len(marks):
            pending = start
            continue
        out.append(Section(start, end, tuple(t for _, t in stack), merged))
        pending, merged = None, 0
    return out
