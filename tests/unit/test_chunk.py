"""Chunkers with the real tokenizer of the default model (the tokenizer only, no weights)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.chunk import make_budget, run_chunk
from embedline.tasks.chunkers import TokenBudget, chunker_for, sentence_spans
from embedline.tasks.config import ChunkParams, Config, EmbedParams, PreprocessParams
from embedline.tasks.records import (
    Chunk,
    Document,
    chunk_id_for,
    content_hash,
    doc_id_for,
    iter_records,
    write_records,
)
from embedline.tasks.tokenize import TokenCounter, load_token_counter

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return load_token_counter(EmbedParams.model_validate({}))


def budget(
    counter: TokenCounter,
    max_tokens: int = 256,
    overlap: int = 32,
    embed: dict[str, Any] | None = None,
    pre: dict[str, Any] | None = None,
    **chunk: Any,
) -> TokenBudget:
    return make_budget(
        ChunkParams.model_validate({"max_tokens": max_tokens, "overlap_tokens": overlap, **chunk}),
        EmbedParams.model_validate(embed or {}),
        PreprocessParams.model_validate(pre or {}),
        counter,
    )


def doc(text: str, fmt: str = "txt", source: str = "d.txt", **meta: Any) -> Document:
    return Document(doc_id_for(source), source, "T", text, content_hash(text), fmt, meta)


def split(strategy: str, d: Document, b: TokenBudget) -> list[Chunk]:
    return list(chunker_for(strategy).split(d, b))


def check(chunks: list[Chunk], d: Document, b: TokenBudget) -> None:
    """The invariants every chunker must keep."""
    assert chunks or not d.text.strip()
    covered = bytearray(len(d.text))
    for i, c in enumerate(chunks):
        assert c.chunk_index == i
        assert c.token_count == b.counter.count(c.embed_text) <= b.max_tokens
        assert c.token_count + b.counter.special_tokens <= b.counter.max_tokens  # the model window
        assert c.text_hash == content_hash(c.embed_text)
        assert c.chunk_id == chunk_id_for(d.doc_id, c.text_hash, i)
        assert 0 <= c.char_start < c.char_end <= len(d.text)
        assert (c.doc_id, c.source, c.title) == (d.doc_id, d.source, d.title)
        covered[c.char_start : c.char_end] = b"\x01" * (c.char_end - c.char_start)
    lost = [ch for ch, cov in zip(d.text, covered, strict=True) if not cov and not ch.isspace()]
    assert not lost, f"uncovered text: {''.join(lost)[:80]!r}"


# ---- sentences ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
        (
            "Use a sieve, e.g. a fine one. Then stir.",
            ["Use a sieve, e.g. a fine one.", "Then stir."],
        ),
        (
            "She moved to the U.S. Army base. It was cold.",
            ["She moved to the U.S. Army base.", "It was cold."],
        ),
        ("As Fig. 3 shows, pi is 3.14 here. Next.", ["As Fig. 3 shows, pi is 3.14 here.", "Next."]),
        (
            "Mr. T. Smith met Ms. Jones at 5 p.m. on Monday. Fine.",
            ["Mr. T. Smith met Ms. Jones at 5 p.m. on Monday.", "Fine."],
        ),
        (
            "See pp. 6-7, i.e. the appendix. Version 2.0 is out! Is it? Yes.",
            ["See pp. 6-7, i.e. the appendix.", "Version 2.0 is out!", "Is it?", "Yes."],
        ),
    ],
)
def test_sentence_splitting_is_abbreviation_safe(text: str, expected: list[str]) -> None:
    assert [text[a:b] for a, b in sentence_spans(text)] == expected


def test_sentence_chunker_packs_with_sentence_overlap(counter: TokenCounter) -> None:
    sentences = [f"Sentence number {i} talks about topic {i} in some detail." for i in range(40)]
    d = doc(" ".join(sentences))
    b = budget(counter, max_tokens=64, overlap=16)
    chunks = split("sentence", d, b)
    check(chunks, d, b)
    assert len(chunks) > 3
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.char_start < prev.char_end  # overlap...
        assert d.text[nxt.char_start : prev.char_end].endswith(".")  # ...of whole sentences
        assert nxt.text.startswith("Sentence number")
    assert all(c.text == d.text[c.char_start : c.char_end] for c in chunks)


def test_no_overlap_when_disabled(counter: TokenCounter) -> None:
    d = doc(" ".join(f"Fact {i} is stated here plainly." for i in range(40)))
    chunks = split("sentence", d, b := budget(counter, max_tokens=48, overlap=0))
    check(chunks, d, b)
    assert all(n.char_start >= p.char_end for p, n in itertools.pairwise(chunks))


def test_over_long_sentence_split_at_token_boundaries(counter: TokenCounter) -> None:
    words = " ".join(f"word{i} information" for i in range(400))  # one sentence, ~1,600 tokens
    d = doc(f"Short intro. {words} end. Short outro.")
    b = budget(counter, max_tokens=128, overlap=16)
    chunks = split("sentence", d, b)
    check(chunks, d, b)
    assert len(chunks) >= 1600 // 126
    assert b.stats["split_sentences"] >= 1
    # pieces start and end at word boundaries, never mid-word
    for c in chunks:
        assert d.text[c.char_end : c.char_end + 1] in ("", " "), c.text[-20:]
        assert c.char_start == 0 or d.text[c.char_start - 1] == " ", c.text[:20]


# ---- tables ------------------------------------------------------------------------------------------
TABLE_HEADER = "| Name | Colour | Price |\n|------|--------|-------|"


def md_table(rows: int) -> str:
    return (
        TABLE_HEADER + "\n" + "\n".join(f"| fruit{i} | colour{i} | {i}.50 |" for i in range(rows))
    )


def test_small_table_kept_whole(counter: TokenCounter) -> None:
    d = doc(
        "# Prices\n\nSome text before.\n\n" + md_table(4) + "\n\nText after.", "markdown", "p.md"
    )
    b = budget(counter, max_tokens=256)
    chunks = split("markdown", d, b)
    check(chunks, d, b)
    assert sum(TABLE_HEADER in c.text for c in chunks) == 1
    assert any("fruit0" in c.text and "fruit3" in c.text for c in chunks)


def test_large_table_split_repeats_header(counter: TokenCounter) -> None:
    d = doc(
        "# Prices\n\nIntro sentence.\n\n" + md_table(60) + "\n\nAfter the table.",
        "markdown",
        "p.md",
    )
    b = budget(counter, max_tokens=96, overlap=16)
    chunks = split("markdown", d, b)
    check(chunks, d, b)
    parts = [c for c in chunks if c.metadata.get("table")]
    assert len(parts) >= 3
    header = (
        "| Name | Colour | Price |\n|---|---|---|\n"  # the separator is compacted when repeated
    )
    for c in parts:
        assert header in c.text  # the header row + separator start every part
        body = c.text.split(header, 1)[1]
        assert "| fruit" in body and "Intro sentence" not in body
    rows = [r for c in parts for r in re.findall(r"\| fruit(\d+) ", c.text)]
    assert sorted(map(int, rows)) == list(range(60))  # every row exactly once, no row overlap


def test_html_labelled_rows_split_repeats_caption(counter: TokenCounter) -> None:
    rows = "\n".join(
        f"Name: item{i}; Price: {i}; Notes: a longer note for row {i}" for i in range(50)
    )
    d = doc("# Shop\n\nTable: Price list\n" + rows, "html", "shop.html")
    b = budget(counter, max_tokens=80, overlap=8)
    chunks = split("auto", d, b)
    check(chunks, d, b)
    parts = [c for c in chunks if c.metadata.get("table")]
    assert len(parts) >= 3 and all("Table: Price list\nName: item" in c.text for c in parts)
    assert all(c.metadata["strategy"] == "markdown" for c in chunks)


# ---- markdown ------------------------------------------------------------------------------------
MD = """# Guide

Intro text for the guide.

## Install

Run the installer.

```bash
# this is a comment, not a heading
make install
```

## Usage
### Options

Pass --verbose for more output.
"""


def test_markdown_heading_path_and_prefix(counter: TokenCounter) -> None:
    d = doc(MD, "markdown", "g.md")
    b = budget(counter)
    chunks = split("markdown", d, b)
    check(chunks, d, b)
    assert [c.heading_path for c in chunks] == [
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Usage", "Options"),
    ]
    assert chunks[0].text.startswith("# Guide")  # own heading in the text: no prefix needed
    assert chunks[1].text.startswith("Guide\n\n## Install")  # parents prefixed
    assert "# this is a comment" in chunks[1].text
    assert chunks[2].text.startswith(
        "Guide\n\n## Usage\n### Options"
    )  # heading-only section merged


def test_markdown_prefix_on_continuation_chunks_and_off_switch(counter: TokenCounter) -> None:
    body = " ".join(f"Step {i} explains one more thing." for i in range(60))
    d = doc(f"# Guide\n\n## Install\n\n{body}\n", "markdown", "g.md")
    b = budget(counter, max_tokens=64, overlap=0)
    chunks = split("markdown", d, b)
    check(chunks, d, b)
    assert all(c.text.startswith("Guide > Install\n\nStep") for c in chunks[1:])
    plain = split("markdown", d, budget(counter, max_tokens=64, overlap=0, heading_prefix=False))
    assert all(c.text == d.text[c.char_start : c.char_end] for c in plain)
    assert all(c.heading_path == ("Guide", "Install") for c in plain)


# ---- code --------------------------------------------------------------------------------------------
PY = '''"""Module docstring."""
import os

CONSTANT = 1


# helper comment belongs to the function
@decorator
def helper(x):
    return x + CONSTANT


class Big:
    """A class."""

    def one(self):
        return 1

    def two(self):
        return 2
'''


def test_code_chunker_python_top_level(counter: TokenCounter) -> None:
    d = doc(PY, "code", "m.py", language="python")
    b = budget(counter)
    chunks = split("code", d, b)
    check(chunks, d, b)
    paths = [c.heading_path for c in chunks]
    assert paths == [(), ("helper",), ("Big",)]
    assert chunks[1].text.startswith(
        "# helper comment belongs to the function\n@decorator\ndef helper"
    )
    assert chunks[2].metadata["kind"] == "ClassDef"


def test_code_chunker_splits_big_class_by_method(counter: TokenCounter) -> None:
    methods = "\n".join(
        f"    def method_{i}(self, value):\n        return value * {i} + self.offset_{i}\n"
        for i in range(30)
    )
    d = doc(f"class Huge:\n    offset = 1\n\n{methods}", "code", "h.py", language="python")
    b = budget(counter, max_tokens=64, overlap=0)
    chunks = split("code", d, b)
    check(chunks, d, b)
    assert ("Huge", "method_7") in {c.heading_path for c in chunks}


def test_code_chunker_falls_back_to_sliding(counter: TokenCounter) -> None:
    broken = doc("def broken(:\n    pass\n" * 50, "code", "b.py", language="python")
    js = doc("function f(a) { return a + 1; }\n" * 60, "code", "f.js", language="javascript")
    b = budget(counter, max_tokens=64, overlap=8)
    for d in (broken, js):
        chunks = split("code", d, b)
        check(chunks, d, b)
        assert {c.metadata["strategy"] for c in chunks} == {"sliding"}


# ---- sliding, auto, transforms, prompts ------------------------------------------------------------
def test_sliding_windows_overlap_in_tokens(counter: TokenCounter) -> None:
    d = doc(" ".join(f"token{i}" for i in range(300)))
    b = budget(counter, max_tokens=50, overlap=10)
    chunks = split("sliding", d, b)
    check(chunks, d, b)
    # windows are full up to the last whole word ("token123" is 3 word pieces) and end at word ends
    assert all(b.max_tokens - 3 <= c.token_count <= b.max_tokens for c in chunks[:-1])
    assert all(d.text[c.char_end : c.char_end + 1] in ("", " ") for c in chunks)
    for prev, nxt in itertools.pairwise(chunks):
        shared = counter.count(d.text[nxt.char_start : prev.char_end])
        assert 7 <= shared <= 10


def test_auto_dispatch(counter: TokenCounter) -> None:
    b = budget(counter)
    cases = {
        "markdown": "markdown",
        "html": "markdown",
        "code": "code",
        "txt": "sentence",
        "json": "sentence",
        "pdf": "sentence",
    }
    for fmt, strategy in cases.items():
        d = doc(
            "def f():\n    return 1\n" if fmt == "code" else "# T\n\nSome text.",
            fmt,
            f"x.{fmt}",
            **({"language": "python"} if fmt == "code" else {}),
        )
        assert {c.metadata["strategy"] for c in split("auto", d, b)} == {strategy}, fmt


def test_embed_text_transform_and_display_casing(counter: TokenCounter) -> None:
    d = doc("The Children Were Running. NASA Launched It.")
    b = budget(counter, pre={"lowercase": True, "lemmatize": True})
    (c,) = split("sentence", d, b)
    assert c.text == d.text  # display keeps casing
    assert c.embed_text == "the child be run. nasa launch it."
    assert c.text_hash == content_hash(c.embed_text)


def test_stemming_that_adds_tokens_never_exceeds_budget(counter: TokenCounter) -> None:
    # Porter stems often tokenize into more word pieces than the original words
    d = doc(" ".join(["happy generously university relational conditional"] * 80))
    b = budget(counter, max_tokens=40, overlap=8, pre={"stem": "porter"})
    chunks = split("sliding", d, b) + split("sentence", d, b)
    assert all(c.token_count == counter.count(c.embed_text) <= b.max_tokens for c in chunks)


def test_budget_accounts_for_special_tokens_and_prompt(counter: TokenCounter) -> None:
    assert budget(counter, max_tokens=512).max_tokens == counter.max_tokens - counter.special_tokens
    prompt = "Represent this passage for retrieval: "
    b = budget(counter, max_tokens=128, embed={"passage_prompt": prompt})
    assert b.max_tokens == 128 - counter.special_tokens - counter.count(prompt)


def test_run_chunk_stage(tmp_path: Any, counter: TokenCounter) -> None:
    art = Artifacts(tmp_path)
    docs = [
        doc(MD, "markdown", "g.md"),
        doc(PY, "code", "m.py", language="python"),
        doc("Plain text. " * 200, "txt", "p.txt"),
    ]
    write_records(art.documents, Document, docs)
    cfg = Config.model_validate({"chunk": {"max_tokens": 64, "overlap_tokens": 8}})
    stats = run_chunk(cfg, art)
    chunks = list(iter_records(art.chunks, Chunk))
    assert stats["documents"] == 3 and stats["chunks"] == len(chunks)
    assert stats["tokens_max"] <= stats["token_budget"] == 64 - counter.special_tokens
    assert stats["tokens_total"] == sum(c.token_count for c in chunks)
    assert {"split_sentences", "seconds", "tokens_mean"} <= stats.keys()
    assert [c.chunk_index for c in chunks if c.source == "g.md"] == [0, 1, 2]


# ---- property: nothing lost, nothing over the window ------------------------------------------------
PIECES = [
    *"abcdeXYZ .,;:!?-#|\n\t()'\"0123456789",
    "é",
    "ß",
    "中",
    "😀",
    "\u00a0",
    "Dr.",
    "e.g.",
    "3.14",
    "\n\n",
    "# ",
    "## ",
    "| a | b |\n|---|---|\n",
    "| 1 | 2 |\n",
    "```\n",
    "def f():\n    ",
    "word",
    "information",
    "Name: x; Price: 1\n",
]
TEXTS = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=150).map("".join), st.text(max_size=200)
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=TEXTS,
    strategy=st.sampled_from(["sentence", "sliding", "markdown", "code", "auto"]),
    max_tokens=st.integers(min_value=8, max_value=48),
)
def test_property_chunks_fit_and_cover(
    counter: TokenCounter, text: str, strategy: str, max_tokens: int
) -> None:
    fmt = {"markdown": "markdown", "code": "code"}.get(strategy, "txt")
    d = doc(
        text,
        fmt,
        "p.py" if fmt == "code" else "p.txt",
        **({"language": "python"} if fmt == "code" else {}),
    )
    b = budget(counter, max_tokens=max_tokens, overlap=max_tokens // 4)
    check(split(strategy, d, b), d, b)


def test_document_fields_travel_with_every_chunk(counter: TokenCounter) -> None:
    """JSON record fields (author, year...) reach each chunk's metadata, hence the payload."""
    d = doc("First sentence here. " * 80, fmt="json", source="f.jsonl#a1", author="Ada", year=1843)
    chunks = split("sentence", d, budget(counter, max_tokens=64, overlap=8))
    assert len(chunks) > 1
    for ch in chunks:
        assert ch.metadata["document"] == {"author": "Ada", "year": 1843}
        assert ch.metadata["strategy"] == "sentence"
