"""The single-core fast paths of preprocess and chunk give what the slow paths gave: the HTML
loader's one-pass selector matcher, the punkt skip for text without sentence ends, and the token
index built from one batched tokenizer call."""

from __future__ import annotations

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from embedline.tasks.chunkers import segment
from embedline.tasks.chunkers.tokens import TokenIndex, segments
from embedline.tasks.loaders.html import Selector, extract_page
from embedline.tasks.tokenize import ConservativeCounter

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
