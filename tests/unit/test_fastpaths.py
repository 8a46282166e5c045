"""The single-core fast paths of preprocess and chunk give what the slow paths gave: the HTML
loader's one-pass selector matcher, the punkt skip for text without sentence ends, the token
index built from one batched tokenizer call (or the conservative counter's offset arrays), and
chunk token counts read off that index."""

from __future__ import annotations

from array import array
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from embedline.tasks.chunkers import segment
from embedline.tasks.chunkers.base import ChunkBuilder, TokenBudget
from embedline.tasks.chunkers.tokens import TokenIndex, segments
from embedline.tasks.loaders.html import Selector, extract_page
from embedline.tasks.records import Document
from embedline.tasks.tokenize import ConservativeCounter, HFTokenCounter, TokenCounter

PAGE = """<html><body>
<div class="a toc" id="d1"><span class="toc">s</span></div>
<table summary="Navigation header"><tr><td>t</td></tr></table>
<table summary="Other"><tr><td>u</td></tr></table>
<p aria-hidden="true">hidden</p><p aria-hidden="false">shown</p>
<ul id="toc"><li>x</li></ul><footer>f</footer><a class="headerlink x">¶</a>
</body></html>"""


def _ids(found: list[etree._Element]) -> list[str]:
    return [f"{el.tag}:{el.get('class') or el.get('summary') or el.get('id') or el.get('aria-hidden')}"
            for el in found]


def test_selector_matches_compound_selectors_in_document_order() -> None:
    root = etree.fromstring(PAGE, etree.HTMLParser())
    sel = Selector("div.toc, table[summary='Navigation header'], [aria-hidden=true], #toc, footer, a.headerlink")
    assert _ids(sel(root)) == ["div:a toc", "table:Navigation header", "p:true", "ul:toc", "footer:None",
                               "a:headerlink x"]
    assert _ids(Selector(".toc")(root)) == ["div:a toc", "span:toc"]


def test_dropped_element_keeps_the_words_around_it_apart() -> None:
    """A removed element leaves a gap, as BeautifulSoup's decompose did: the heading reads
    "Intro duction" (two strings), not "Introduction" glued by the removal."""
    page = extract_page("<html><body><main><h2>Intro<script>x</script>duction</h2><p>body text</p>"
                        "</main></body></html>")
    assert page.text.splitlines()[0] == "## Intro duction"


def _punkt_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """sentence_spans without the fast path (what it returned before)."""
    raw = [(start + a, start + b) for a, b in segment._punkt().span_tokenize(text[start:end])]
    if not raw:
        return [(start, end)] if text[start:end].strip() else []
    starts = [start] + [a for a, _ in raw[1:]]
    out = []
    for a, b in zip(starts, [*starts[1:], end], strict=True):
        b2 = a + len(text[a:b].rstrip())
        if b2 > a:
            out.append((a, b2))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["word", "Dr", " ", "\n", "\t", "é", "(", ",", ";", "-", "x", ".", "?"]),
                max_size=40).map("".join), st.data())
def test_sentence_spans_fast_path_equals_punkt(text: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    assert segment.sentence_spans(text, start, end) == _punkt_spans(text, start, end)


class _Batching(ConservativeCounter):
    calls = 0

    def spans_batch(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        self.calls += 1
        return [self.spans(t) for t in texts]


def test_token_index_uses_one_batched_call_and_the_same_offsets() -> None:
    text = ("Tokens, words and symbols: " * 3000).strip()
    counter = _Batching(256)
    index = TokenIndex(text, counter)
    assert len(segments(text)) > 1
    starts, ends = array("q"), array("q")
    for s, e in segments(text):
        for a, b in ConservativeCounter(256).spans(text[s:e]):
            starts.append(s + a)
            ends.append(s + b)
    assert index.count(0, len(text)) == len(starts) and counter.calls == 1
    assert index.spans(100, 40_000) == [(a, min(b, 40_000)) for a, b in zip(starts, ends, strict=True)
                                        if 100 <= a < 40_000]


_ODD = ["word", "Dr", "abcdefgh", "un", "able", "ing", " ", "\n", "\t", "\r", "\f", "\v", "\x1c", "\u00a0", "\u2028", "é", "e\u0301",
        "中文", "İ", "ß", "_", "(", ",", ".", "-", "😀", "x", "9"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_ODD), max_size=50).map("".join))
def test_conservative_offset_arrays_equal_the_regex_spans(text: str) -> None:
    starts, ends = ConservativeCounter(256).offset_arrays(text)
    assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == ConservativeCounter(256).spans(text)


def _hf_counter() -> TokenCounter:
    return HFTokenCounter("all-MiniLM-L6-v2")


@pytest.mark.parametrize("make_counter", [lambda: ConservativeCounter(256), _hf_counter],
                         ids=["conservative", "hf-minilm"])
def test_indexed_chunk_count_equals_the_tokenizer_count(make_counter: Callable[[], TokenCounter]) -> None:
    """The packer's count of a chunk off the document's token index (no tokenizer call) is the
    tokenizer's own count of the chunk's embed text, whatever the span, title and prefix."""
    counter = make_counter()
    assert counter.whitespace_split
    budget = TokenBudget(counter, 10_000, context_template="{title}\n{headings}\n\n{text}")

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from(_ODD), min_size=1, max_size=60).map("".join),
           st.sampled_from(["", "Title", "word Dr"]), st.sampled_from(["", "A > B\n\n", "x"]), st.data())
    def check(text: str, title: str, prefix: str, data: st.DataObject) -> None:
        b = ChunkBuilder(Document("d", "s", title, text, "h", "markdown"), budget, "markdown")
        # spans that start after / end before any space-like character (where the shortcut may apply)
        cuts = [i for i in range(len(text) + 1) if i in (0, len(text)) or text[i - 1].isspace()
                or text[i].isspace() or text[i - 1] == "\x1c"]
        s = data.draw(st.sampled_from(cuts))
        e = data.draw(st.sampled_from([c for c in cuts if c >= s]))
        display = prefix + text[s:e]
        for path, in_text in (((), False), (("H1", "H2"), False), (("H1",), True)):
            assert b.measure(display, path, in_text, (s, e)) == b.measure(display, path, in_text)

    check()
    # every span of texts whose words join across characters BERT drops (\f, \x1c) or keeps
    for text in ("un\fable ing", "un\x1cable\ting", "un\u00a0able\vx", "Dr. un able\r\nwork"):
        b = ChunkBuilder(Document("d", "s", "T", text, "h", "markdown"), budget, "markdown")
        for s in range(len(text) + 1):
            for e in range(s, len(text) + 1):
                assert b.measure(text[s:e], (), False, (s, e)) == b.measure(text[s:e]), (text, s, e)


def _nltk_punkt() -> object:
    """punkt as NLTK itself gives it (the whole package imported), with the same abbreviations."""
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(segment.ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


PROSE = ("Dr. Smith went home. He left, e.g. at noon, i.e. early. The U.S. Army is big. J. R. R. "
         "Tolkien wrote books. See Fig. 3 and p. 12. Version 3.11. was released. Call f(x). Then "
         "stop!! Why? because. The end... Or not. Mr. Brown met St. John on Jan. 5. Done. ok. OK. "
         "Hello-world. Next. vs. them. ETC. More text follows. (Really.) Yes.")
PIECES = ["word", "Dr", "etc", "e.g", "J", "3", "11", "Next", "next", " ", "\n", ".", ".", "?", "!",
          "(", ")", ",", ";", "-", "é", '"', "'", "...", "Fig", "x"]


@pytest.mark.parametrize("text", [PROSE, PROSE.replace(". ", ".\n"), PROSE.lower(), PROSE.upper()])
def test_punkt_shortcut_equals_nltk_punkt(text: str) -> None:
    """The plain-word shortcut of text_contains_sentbreak and the import without nltk/__init__
    split exactly as NLTK's own punkt with the same parameters."""
    assert list(segment._punkt().span_tokenize(text)) == list(_nltk_punkt().span_tokenize(text))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60).map("".join))
def test_punkt_shortcut_equals_nltk_punkt_on_any_text(text: str) -> None:
    assert list(segment._punkt().span_tokenize(text)) == list(_nltk_punkt().span_tokenize(text))


def test_punkt_loads_without_importing_nltk_package() -> None:
    """Building the sentence splitter in a fresh process imports neither the nltk package's
    __init__ (scipy, sklearn wrappers) nor leaves an nltk module behind; a later import of nltk
    gets the real, whole package."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from embedline.tasks.chunkers.segment import sentence_spans\n"
            "assert sentence_spans('Dr. Smith left. He did.') == [(0, 15), (16, 23)]\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('nltk', 'scipy')))\n"
            "import nltk\n"
            "print(hasattr(nltk, 'word_tokenize'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True"]
