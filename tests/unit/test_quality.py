"""Issue 15: real documents in, no boilerplate out.

Fixtures under tests/fixtures are real generator output taken from Debian packages (trimmed where
noted): DocBook (postgresql-doc-15: tutorial-install, tutorial-start, the head of bookindex),
Sphinx (python-nbsphinx-doc: timeout, genindex, search), Javadoc (libakuma-java-doc:
NetworkServer, the head of index-all), MkDocs (mkdocs-literate-nav-doc: reference) and a man page
rendered by `man` (cp(1) at MANWIDTH=60, with U+2010 line-end hyphens).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.chunk import run_chunk
from embedline.tasks.config import Config, load_config
from embedline.tasks.preprocess import run_preprocess
from embedline.tasks.records import Chunk, Document, iter_records, read_rejections

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# navigation text each generator puts around the content (as whole lines or phrases)
NAV_TEXT = {
    "docbook": [r"\bPrev\b", r"\bNext\b", r"\bUp\b", r"\bHome\b"],
    "sphinx": [r"\bNavigation\b", r"\bprevious\b \|", r"Quick search", r"Show Source"],
    "javadoc": [r"Skip navigation links", r"All\s+Classes", r"Summary:", r"Nested \| Field"],
    "mkdocs": [r"\bPrevious\b", r"Built with MkDocs", r"Search\b.*\bKeyboard"],
}
SKIPPED = {
    "docbook/bookindex.html": "index_page",
    "docbook/tutorial-start.html": "contents_page",
    "sphinx/genindex.html": "index_page",
    "sphinx/search.html": "search_page",
    "javadoc/index-all.html": "index_page",
}


def _cfg(source: Path, **over: object) -> Config:
    return load_config(None, {"source": str(source), "embed.provider": "fake", **over})


def _ingest(tmp_path: Path, files: dict[str, Path], **over: object) -> tuple[Artifacts, Config]:
    src = tmp_path / "src"
    for rel, path in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / rel)
    art = Artifacts(tmp_path)
    cfg = _cfg(src, **over)
    run_preprocess(cfg, art)
    run_chunk(cfg, art)
    return art, cfg


@pytest.fixture(scope="module")
def html_run(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    tmp = tmp_path_factory.mktemp("html")
    files = {str(p.relative_to(FIXTURES / "html")): p for p in (FIXTURES / "html").rglob("*.html")}
    art, _ = _ingest(tmp, files)
    return art


def test_no_chunk_of_four_generators_carries_navigation(html_run: Artifacts) -> None:
    chunks = list(iter_records(html_run.chunks, Chunk))
    by_gen: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_gen.setdefault(c.source.split("/")[0], []).append(c)
    assert set(by_gen) == set(NAV_TEXT)  # every generator's content page made chunks
    for gen, patterns in NAV_TEXT.items():
        for c in by_gen[gen]:
            for pat in patterns:
                assert not re.search(pat, c.text), f"{gen}: {pat!r} in chunk of {c.source}: {c.text[:200]!r}"
                assert not re.search(pat, c.embed_text), f"{gen}: {pat!r} in embed text of {c.source}"
    # the content itself is there
    joined = {g: "\n".join(c.text for c in cs) for g, cs in by_gen.items()}
    assert "PGHOST environment variable" in joined["docbook"]
    assert "nbsphinx_timeout = 60" in joined["sphinx"]
    assert "Multi-process network server" in joined["javadoc"]
    assert "literate nav" in joined["mkdocs"].lower()


def test_index_contents_and_search_pages_are_skipped_and_reported(html_run: Artifacts) -> None:
    rejected = {r.path: r for r in read_rejections(html_run.rejected)}
    for rel, reason in SKIPPED.items():
        assert rel in rejected, f"{rel} not reported"
        assert rejected[rel].reason == reason and rejected[rel].detail
    docs = {d.source for d in iter_records(html_run.documents, Document)}
    assert docs.isdisjoint(SKIPPED)


def test_page_skipping_is_configurable(tmp_path: Path) -> None:
    art, _ = _ingest(tmp_path, {"sphinx/genindex.html": FIXTURES / "html/sphinx/genindex.html"},
                     **{"preprocess.html_skip_pages": []})
    assert {d.source for d in iter_records(art.documents, Document)} == {"sphinx/genindex.html"}


def test_man_page_has_no_split_words_and_no_running_headers(tmp_path: Path) -> None:
    raw = (FIXTURES / "man/cp.1.txt").read_text(encoding="utf-8")
    assert "\u2010\n" in raw  # the fixture really has man's line-end hyphens
    art, _ = _ingest(tmp_path, {"cp.1.txt": FIXTURES / "man/cp.1.txt"})
    (doc,) = iter_records(art.documents, Document)
    assert doc.format == "man" and doc.title == "cp - copy files and directories"
    chunks = list(iter_records(art.chunks, Chunk))
    for c in chunks:
        assert "\u2010" not in c.text and "CP(1)" not in c.text and "GNU coreutils 9.1" not in c.text
    text = "\n".join(c.text for c in chunks)
    for word in ("DIRECTORY", "attributes", "argument"):  # broken across lines in the fixture
        assert word in text
    assert any(c.heading_path == ("DESCRIPTION",) for c in chunks)  # man sections are headings
    # every chunk's embedded text starts with the page's NAME line
    assert all(c.embed_text.startswith(("cp - copy files", "## NAME")) for c in chunks)


def test_markdown_html_comments_never_reach_a_chunk(tmp_path: Path) -> None:
    md = tmp_path / "buffer.md"
    md.write_text(
        "# Buffer\n\n## buf.readDoubleLE(offset)\n<!-- YAML\nadded: v5.10.0\nchanges:\n  - version: v10.0.0\n"
        "    description: Removed noAssert.\n-->\n\nReads a 64-bit double from `buf`. <!-- inline -->\n\n"
        "```html\n<!-- a comment inside code stays -->\n```\n",
        encoding="utf-8",
    )
    art, _ = _ingest(tmp_path / "run", {"buffer.md": md})
    chunks = list(iter_records(art.chunks, Chunk))
    text = "\n".join(c.text + c.embed_text for c in chunks)
    assert "YAML" not in text and "added: v5.10.0" not in text and "inline" not in text
    assert "<!-- a comment inside code stays -->" in text and "Reads a 64-bit double" in text


def test_every_chunk_embeds_its_title_and_heading_path(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        '{"_id": "1", "title": "Wing flutter", "text": "' + "Flutter of a swept wing was measured. " * 60 + '"}\n'
        '{"_id": "2", "title": "boundary layer transition", "text": ""}\n',
        encoding="utf-8",
    )
    md = tmp_path / "g.md"
    md.write_text("# Guide\n\n## Install\n\n" + "Run the installer and wait. " * 80, encoding="utf-8")
    art, cfg = _ingest(tmp_path / "run", {"c.jsonl": corpus, "g.md": md})
    chunks = list(iter_records(art.chunks, Chunk))
    rec1 = [c for c in chunks if c.source == "c.jsonl#1"]
    assert len(rec1) > 1 and all(c.embed_text.startswith("Wing flutter\n\n") for c in rec1)
    assert all(c.text.startswith("Flutter") for c in rec1)  # the display text is unchanged
    (title_only,) = [c for c in chunks if c.source == "c.jsonl#2"]  # a title-only record is a document
    assert title_only.text == "boundary layer transition"
    guide = [c for c in chunks if c.source == "g.md"]
    assert len(guide) > 1 and all("Guide" in c.embed_text and "Install" in c.embed_text for c in guide)
    assert all(c.embed_text.startswith("Guide > Install\n\n") for c in guide[1:])
    assert all(c.token_count <= cfg.chunk.max_tokens for c in chunks)  # the context fits the budget
    # the template is part of the fingerprint, and '' turns context off
    off = load_config(None, {"chunk.context_template": ""})
    assert off.fingerprint() != cfg.fingerprint()


def test_context_template_is_validated() -> None:
    from embedline.tasks.config import ConfigError

    with pytest.raises(ConfigError, match="context_template"):
        load_config(None, {"chunk.context_template": "{title} {body}"})
    with pytest.raises(ConfigError, match="context_template"):
        load_config(None, {"chunk.context_template": "{title}"})


def test_dehyphenation_of_every_line_end_hyphen() -> None:
    from embedline.tasks.config import PreprocessParams
    from embedline.tasks.normalize import clean_text

    p = PreprocessParams()
    text = "inconsis\u2010\n       tent, infor\u00ad\nmation, infor-\nmation, DI\u2010\n   RECTORY, Anglo-\nSaxon"
    assert clean_text(text, p) == "inconsistent, information, information, DIRECTORY, Anglo-\nSaxon"
