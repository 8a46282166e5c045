"""Loaders, the source walk, bad-input rejections and the preprocess stage."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from embedline.tasks.artifacts import Artifacts
from embedline.tasks.config import Config, PreprocessParams
from embedline.tasks.loaders import loader_for
from embedline.tasks.preprocess import (
    NoUsableDocumentsError,
    PreprocessError,
    is_excluded,
    load_path,
    run_preprocess,
    walk_source,
)
from embedline.tasks.records import (
    Document,
    Rejection,
    content_hash,
    doc_id_for,
    iter_records,
    read_rejections,
)

pytestmark = pytest.mark.unit
PROJECT = Path(__file__).resolve().parents[2]


def params(**kw: Any) -> PreprocessParams:
    return PreprocessParams.model_validate(kw)


def load(path: Path, rel: str | None = None, **kw: Any) -> list[Document | Rejection]:
    return list(load_path(path, rel or path.name, params(**kw)))


def one_doc(items: Iterable[Document | Rejection]) -> Document:
    items = list(items)
    assert len(items) == 1 and isinstance(items[0], Document), items
    return items[0]


def one_rejection(items: Iterable[Document | Rejection]) -> Rejection:
    items = list(items)
    assert len(items) == 1 and isinstance(items[0], Rejection), items
    return items[0]


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def make_pdf(lines: list[str]) -> bytes:
    """A minimal one-page PDF with Helvetica text (built by hand: no PDF writer needed)."""
    body = " ".join(f"({ln}) Tj 0 -16 Td" for ln in lines)
    content = f"BT /F1 12 Tf 72 720 Td {body} ET"
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


# ---- loaders ---------------------------------------------------------------------------------------
def test_text_loader_ids_hash_title(tmp_path: Path) -> None:
    p = write(tmp_path / "notes" / "a.txt", "  Title line  \n\nBody   text here.\n")
    doc = one_doc(load(p, "notes/a.txt"))
    assert doc.text == "Title line\n\nBody text here."
    assert doc.doc_id == doc_id_for("notes/a.txt")
    assert doc.content_hash == content_hash(doc.text)
    assert doc.title == "Title line" and doc.format == "txt" and doc.source == "notes/a.txt"
    assert loader_for(tmp_path / "x.rst") is loader_for(tmp_path / "x.text") is loader_for(p)


def test_markdown_loader_front_matter_and_title(tmp_path: Path) -> None:
    p = write(tmp_path / "g.md", "---\ntitle: 'The Guide'\ntags: [a]\n---\n# Heading\n\nText.\n")
    doc = one_doc(load(p))
    assert doc.format == "markdown" and doc.title == "The Guide"
    assert doc.text == "# Heading\n\nText." and "tags: [a]" in doc.metadata["front_matter"]
    p2 = write(tmp_path / "h.markdown", "Intro\n\n# Real Title\n\nBody\n")
    assert one_doc(load(p2)).title == "Real Title"


HTML = """<!doctype html><html><head><title>Sphinx page</title><style>p {color: red}</style>
<script>var tracking = "SCRIPTTEXT";</script></head><body>
<div class="related" role="navigation">NAVTEXT previous | next</div>
<header>SITE HEADER</header>
<div class="sphinxsidebar">SIDEBAR search box</div>
<main><h1>Install guide<a class="headerlink" href="#x">¶</a></h1>
<p>First   paragraph with <b>bold</b> text.</p>
<h2>Prices</h2>
<table><caption>Fruit prices</caption>
<tr><th>Name</th><th>Price</th></tr>
<tr><td>Apple</td><td>3</td></tr><tr><td>Pear</td><td>4</td></tr></table>
<pre>def f():
    return 1</pre>
<ul><li>one</li><li>two</li></ul>
<aside>ASIDE TEXT</aside></main>
<footer>FOOTERTEXT copyright</footer></body></html>"""


def test_html_loader_drops_boilerplate_keeps_structure(tmp_path: Path) -> None:
    doc = one_doc(load(write(tmp_path / "page.html", HTML)))
    for junk in (
        "SCRIPTTEXT",
        "NAVTEXT",
        "SITE HEADER",
        "SIDEBAR",
        "FOOTERTEXT",
        "ASIDE",
        "color",
        "¶",
    ):
        assert junk not in doc.text
    assert doc.title == "Sphinx page" and doc.format == "html"
    assert "# Install guide\n\nFirst paragraph with bold text." in doc.text
    assert "## Prices" in doc.text
    assert "Table: Fruit prices\nName: Apple; Price: 3\nName: Pear; Price: 4" in doc.text
    assert "```\ndef f():\n    return 1\n```" in doc.text  # <pre> keeps indentation
    assert "- one\n- two" in doc.text


def test_html_article_header_is_content(tmp_path: Path) -> None:
    page = "<html><body><article><header><h1>Kept title</h1></header><p>Body.</p></article></body></html>"
    doc = one_doc(load(write(tmp_path / "a.htm", page)))
    assert doc.text.startswith("# Kept title")


def test_jsonl_loader_fields_metadata_and_bad_line(tmp_path: Path) -> None:
    lines = [
        {"_id": "r1", "title": "One", "text": "First record.", "lang": "en"},
        "{not json",
        {"id": 7, "text": "Second record uses id."},
        {"_id": "r3", "body": "no text field"},
        {"_id": "r1", "text": "duplicate id"},
        {"_id": "r4", "text": "   "},
    ]
    raw = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    out = load(write(tmp_path / "sub" / "recs.jsonl", raw), "sub/recs.jsonl")
    docs = [o for o in out if isinstance(o, Document)]
    rej = {o.path: o.reason for o in out if isinstance(o, Rejection)}
    assert [d.source for d in docs] == ["sub/recs.jsonl#r1", "sub/recs.jsonl#7"]
    assert docs[0].doc_id == doc_id_for("sub/recs.jsonl#r1")
    assert docs[0].title == "One" and docs[0].metadata == {"lang": "en", "record": "r1"}
    assert rej == {
        "sub/recs.jsonl:2": "malformed_json",
        "sub/recs.jsonl:4": "missing_field",
        "sub/recs.jsonl:5": "duplicate_id",
        "sub/recs.jsonl:6": "empty",
    }


def test_jsonl_configurable_fields(tmp_path: Path) -> None:
    p = write(
        tmp_path / "c.jsonl", json.dumps({"key": "k1", "body": "Hello there.", "name": "N"}) + "\n"
    )
    doc = one_doc(load(p, json_text_field="body", json_id_field="key", json_title_field="name"))
    assert doc.source == "c.jsonl#k1" and doc.text == "Hello there." and doc.title == "N"


def test_json_object_and_list(tmp_path: Path) -> None:
    single = one_doc(load(write(tmp_path / "one.json", json.dumps({"text": "Solo.", "x": 1}))))
    assert single.source == "one.json" and single.metadata["x"] == 1
    many = load(
        write(
            tmp_path / "many.json",
            json.dumps([{"_id": "a", "text": "A."}, {"_id": "b", "text": "B."}]),
        )
    )
    assert [d.source for d in many if isinstance(d, Document)] == ["many.json#a", "many.json#b"]
    assert one_rejection(load(write(tmp_path / "bad.json", '{"text": '))).reason == "malformed_json"


def test_code_loaders(tmp_path: Path) -> None:
    py = one_doc(load(write(tmp_path / "m.py", "def f():\r\n    return 1   \n")))
    assert py.format == "code" and py.metadata["language"] == "python"
    assert py.text == "def f():\n    return 1" and py.title == "m.py"
    go = one_doc(load(write(tmp_path / "main.go", "package main\n\nfunc main() {}\n")))
    assert go.metadata["language"] == "go"
    script = one_doc(load(write(tmp_path / "deploy", "#!/usr/bin/env bash\necho hi\n")))
    assert script.format == "code" and script.metadata["language"] == "shell"
    readme = one_doc(load(write(tmp_path / "README", "Plain notes.\n")))
    assert readme.format == "txt"


def test_pdf_loader(tmp_path: Path) -> None:
    doc = one_doc(
        load(write(tmp_path / "paper.pdf", make_pdf(["Hello PDF world.", "Second line."])))
    )
    assert doc.format == "pdf" and "Hello PDF world." in doc.text and "Second line." in doc.text
    assert doc.metadata["pages"] == 1
    assert (
        one_rejection(load(write(tmp_path / "broken.pdf", b"%PDF-1.4\ngarbage"))).reason
        == "malformed_pdf"
    )
    assert (
        one_rejection(load(write(tmp_path / "fake.pdf", b"not a pdf at all"))).reason
        == "malformed_pdf"
    )


@pytest.mark.parametrize(
    ("data", "encoding", "expected"),
    [
        (
            "Café au lait, naïve résumé, Müller.\n".encode("latin-1"),
            "cp1252",
            "Café au lait, naïve résumé",
        ),
        ("café\n".encode("latin-1"), "cp1252", "café"),
        (
            "He said “hi” — for €5…\n".encode("cp1252"),
            "cp1252",
            "He said “hi” — for €5...",
        ),  # NFKC: … -> ...
        ("Grüße aus Köln\n".encode("utf-16"), "utf-16", "Grüße aus Köln"),
        ("\ufeffBOM text\n".encode(), "utf-8-sig", "BOM text"),
    ],
)
def test_encodings_detected(tmp_path: Path, data: bytes, encoding: str, expected: str) -> None:
    doc = one_doc(load(write(tmp_path / "enc.txt", data)))
    assert doc.text.startswith(expected) and doc.metadata["encoding"] == encoding


# ---- bad input -------------------------------------------------------------------------------------
def test_binary_file_rejected(tmp_path: Path) -> None:
    r = one_rejection(load(write(tmp_path / "x.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR" * 10)))
    assert r.reason == "binary" and r.path == "x.txt"


def test_undecodable_bytes_rejected(tmp_path: Path) -> None:
    import random

    rng = random.Random(3)
    data = bytes(b for b in rng.randbytes(600) if b >= 0x80 or b == 0x20)
    assert one_rejection(load(write(tmp_path / "x.txt", data))).reason == "undecodable"


@pytest.mark.parametrize("content", [b"", b"   \n\t\n  ", b"<html><body>  </body></html>"])
def test_empty_and_whitespace_only_rejected(tmp_path: Path, content: bytes) -> None:
    name = "e.html" if content.startswith(b"<") else "e.txt"
    assert one_rejection(load(write(tmp_path / name, content))).reason == "empty"


def test_too_large_rejected_without_reading(tmp_path: Path) -> None:
    p = tmp_path / "big.txt"
    with p.open("wb") as fh:  # sparse: 2 MB of size, no real bytes written
        fh.truncate(2 * 1024 * 1024)
    r = one_rejection(load(p, max_file_mb=1))
    assert r.reason == "too_large" and "max_file_mb=1" in r.detail


def test_unreadable_file_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "secret.txt", "hidden")
    real = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self.name == "secret.txt":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    r = one_rejection(load(p))
    assert r.reason == "unreadable" and "permission" in r.detail


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file regardless of mode")
def test_unreadable_file_rejected_by_mode(tmp_path: Path) -> None:
    p = write(tmp_path / "secret.txt", "hidden")
    p.chmod(0)
    try:
        assert one_rejection(load(p)).reason == "unreadable"
    finally:
        p.chmod(0o644)


def test_malformed_html_rejected(tmp_path: Path) -> None:
    page = "<html><body><!-- unclosed comment <p>" + "Real content that the comment swallows. " * 3
    r = one_rejection(load(write(tmp_path / "p.html", page + "</p></body></html>")))
    assert r.reason == "malformed_html"


def test_unsupported_format_rejected(tmp_path: Path) -> None:
    r = one_rejection(load(write(tmp_path / "slides.pptx", b"PK\x03\x04 zip")))
    assert r.reason == "unsupported_format" and ".pptx" in r.detail


def test_walk_symlinks_and_special_files(tmp_path: Path) -> None:
    root, outside = tmp_path / "src", tmp_path / "outside"
    write(outside / "secret.txt", "outside")
    write(root / "b" / "real.txt", "inside")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "inner_link.txt").symlink_to(root / "b" / "real.txt")
    (root / "dangling.txt").symlink_to(root / "missing.txt")
    (root / "dangling_out.txt").symlink_to("../../nowhere.txt")  # outside, even though missing
    (root / "loop").symlink_to(root, target_is_directory=True)
    os.mkfifo(root / "pipe.txt")
    items = list(walk_source(root, params()))
    files = [i[0] for i in items if isinstance(i, tuple)]
    rej = {i.path: i.reason for i in items if isinstance(i, Rejection)}
    assert files == ["b/real.txt", "inner_link.txt"]
    assert rej == {
        "dangling.txt": "broken_symlink",
        "dangling_out.txt": "symlink_escape",
        "escape.txt": "symlink_escape",
        "escape_dir": "symlink_escape",
        "loop": "symlink_loop",
        "pipe.txt": "not_a_file",
    }
    no_follow = [
        i for i in walk_source(root, params(follow_symlinks=False)) if isinstance(i, tuple)
    ]
    assert [f for f, _ in no_follow] == ["b/real.txt"]


def test_exclude_globs() -> None:
    pats = ("**/.*", "**/__pycache__/**", "drafts/*.md")
    assert is_excluded(".git", pats, is_dir=True) and is_excluded("a/.hidden.txt", pats)
    assert is_excluded("pkg/__pycache__", pats, is_dir=True)
    assert is_excluded("drafts/x.md", pats) and not is_excluded("drafts/x.txt", pats)
    assert not is_excluded("a/visible.txt", pats)


# ---- the stage -------------------------------------------------------------------------------------
def corpus(root: Path) -> None:
    write(root / "a.md", "# A\n\nAlpha text.\n")
    write(root / "z.txt", "Zulu text.\n")
    write(root / "m" / "recs.jsonl", '{"_id": "1", "text": "One."}\n{oops\n')
    write(root / "m" / "empty.txt", "")
    write(root / "bin.txt", b"\x00\x01\x02")
    write(root / ".hidden" / "skip.txt", "hidden text")
    write(root / "pic.png", b"\x89PNG")


def run(tmp_path: Path, **overrides: Any) -> tuple[dict[str, Any], Artifacts]:
    cfg = Config.model_validate({"source": str(tmp_path / "src"), **overrides})
    art = Artifacts(tmp_path / "out")
    return run_preprocess(cfg, art), art


def test_run_preprocess_streams_documents_and_rejections(tmp_path: Path) -> None:
    corpus(tmp_path / "src")
    stats, art = run(tmp_path)
    docs = list(iter_records(art.documents, Document))
    assert [d.source for d in docs] == ["a.md", "m/recs.jsonl#1", "z.txt"]  # sorted walk
    rejected = {(r.path, r.reason) for r in read_rejections(art.rejected)}
    assert rejected == {
        ("bin.txt", "binary"),
        ("m/empty.txt", "empty"),
        ("m/recs.jsonl:2", "malformed_json"),
        ("pic.png", "unsupported_format"),
    }
    assert stats["documents"] == 3 and stats["rejected"] == 4 and stats["excluded"] == 1
    assert stats["rejected_binary"] == 1 and stats["rejected_too_large"] == 0
    assert stats["docs_markdown"] == 1 and stats["docs_json"] == 1 and stats["docs_txt"] == 1
    assert stats["bytes_in"] > 0 and stats["seconds"] >= 0
    assert all(isinstance(v, int | float) for v in stats.values())  # flat, JSON-able


def test_run_preprocess_is_deterministic(tmp_path: Path) -> None:
    corpus(tmp_path / "src")
    _, art = run(tmp_path)
    first = {f.name: f.read_bytes() for f in art.documents.iterdir()}
    run(tmp_path, run={"full_rebuild": True})  # rewrites every shard
    assert {f.name: f.read_bytes() for f in art.documents.iterdir()} == first


def test_zero_usable_documents_fails_clearly(tmp_path: Path) -> None:
    write(tmp_path / "src" / "empty.txt", "")
    write(tmp_path / "src" / "bin.txt", b"\x00\x00")
    with pytest.raises(
        NoUsableDocumentsError, match=r"no usable documents in .*src.*2 rejected.*binary=1.*empty=1"
    ):
        run(tmp_path)
    assert len(read_rejections(tmp_path / "out" / "data" / "interim" / "rejected.jsonl")) == 2
    assert not (tmp_path / "out" / "data" / "interim" / "documents").exists()


def test_missing_source_folder(tmp_path: Path) -> None:
    with pytest.raises(PreprocessError, match="does not exist"):
        run(tmp_path)


def test_committed_bad_inputs_and_encodings() -> None:
    """data/raw/bad holds one file per committable bad-input kind; data/raw/encodings must load.

    Symlinks are not committed there: DVC follows them when hashing data/raw (a dangling one makes
    `dvc repro` fail, an escaping one makes the stage depend on the target); they, unreadable and
    oversized files are generated in the tests above."""
    p = params()
    expected = {
        "empty.txt": "empty",
        "whitespace_only.md": "empty",
        "corrupted_export.txt": "binary",
        "undecodable.txt": "undecodable",
        "broken_config.json": "malformed_json",
        "unclosed_comment.html": "malformed_html",
        "diagram.png": "unsupported_format",
    }
    bad = PROJECT / "data" / "raw" / "bad"
    for name, reason in expected.items():
        assert one_rejection(load_path(bad / name, name, p)).reason == reason, name
    out = list(load_path(bad / "malformed.jsonl", "malformed.jsonl", p))
    assert [o.reason for o in out if isinstance(o, Rejection)] == ["malformed_json"]
    assert len([o for o in out if isinstance(o, Document)]) == 2
    for f in sorted((PROJECT / "data" / "raw" / "encodings").iterdir()):
        doc = one_doc(load_path(f, f.name, p))
        assert "\ufffd" not in doc.text and "Ã" not in doc.text, f.name  # no mojibake
    latin = one_doc(load_path(PROJECT / "data/raw/encodings/latin1_creme_brulee.txt", "l.txt", p))
    assert latin.text.startswith("Crème brûlée") and "«burnt cream»" in latin.text
